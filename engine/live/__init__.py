"""Live running: configuration, state store, risk, trading glue and the runner."""
