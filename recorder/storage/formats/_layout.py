"""Names of the columns the Parquet layout adds to a struct (no pyarrow import: the read side uses them too)."""

from __future__ import annotations

__all__ = ["EXTRA", "FROM_ENVELOPE", "INTERNAL", "NULLS"]

#: Name of the JSON column holding a model's undeclared (extra) fields.
EXTRA = "_extra"
#: Name of the list<string> column of a struct naming the keys that were explicitly JSON null.
NULLS = "_nulls"
#: Name of the list<string> column of the record struct naming the keys taken from the envelope.
FROM_ENVELOPE = "_from_envelope"
#: The columns the layout adds to a struct, in the order they come after its declared fields.
INTERNAL = (NULLS, FROM_ENVELOPE, EXTRA)
