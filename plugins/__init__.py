"""The built-in plugins: sources, notifiers and executors, each registered through entry points."""
