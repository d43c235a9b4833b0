"""perpwatch: a rules engine for crypto-derivatives market structure."""

from __future__ import annotations

__version__ = "0.1.0"
