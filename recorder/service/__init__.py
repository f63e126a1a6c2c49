"""The recorder process: its entry (``router``), the ingest loop and the writer actors it drives, the de-duplication index, the supervisor, endpoints and locks, stats and metrics."""
