"""Shared helpers that every layer may use: errors, time, clocks, redaction, JSON-safe values, Retry-After."""
