"""The application container, the per-job scope and settings loading."""
