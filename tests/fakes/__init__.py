"""Test doubles shared by the test suite and the benchmarks (see ``fakes.market``)."""

from .market import FakeMarket, Seen, generate_series

__all__ = ["FakeMarket", "Seen", "generate_series"]
