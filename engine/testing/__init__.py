"""Strategy test files (promtool-style), their series notation, and explain."""
