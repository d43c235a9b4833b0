"""The plugin contract: hook specifications, base classes and the registry."""
