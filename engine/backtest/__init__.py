"""Backtests: history, the walk over it with the paper account, statistics and reports."""
