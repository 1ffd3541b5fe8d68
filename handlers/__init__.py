"""Job types: their notifications, request parsing and handlers, one module per job type."""
