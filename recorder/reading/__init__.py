"""The read side: read, filter, order, verify, replay and recheck recordings."""
