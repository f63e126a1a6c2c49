"""On-disk formats a sealed segment can take besides its JSONL journal (one module per format)."""
