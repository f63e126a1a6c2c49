"""Storage: the journal (framing, chain, recovery), every durable write (``_durable``), segments, the catalog and the formats."""

__all__ = ["INTERNAL_DIR"]

#: The recorder's own folder under a data root (catalog, audit, quarantine, state, lock); never a data type's.
INTERNAL_DIR = "_recorder"
