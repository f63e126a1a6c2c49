"""The recorder process: the ingest loop and the writer actors it drives."""
