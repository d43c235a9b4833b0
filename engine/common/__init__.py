"""Shared helpers that every layer may use: errors, time, clocks."""
