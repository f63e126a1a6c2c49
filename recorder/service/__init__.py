"""The recorder process: its entry (``router``), the ingest loop and the writer actors it drives, the supervisor, the endpoint lock, stats (``stats.fetch_stats``) and metrics."""
