"""Rows of a sealed Parquet segment back into envelopes: the journal's JSON shapes, absent and null apart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path
from typing import Any

import msgspec

from ..storage.formats._layout import EXTRA, FROM_ENVELOPE, INTERNAL, NULLS

__all__ = ["parquet_rows", "py"]


def py(value: Any, t: Any) -> Any:
    """An Arrow value (from to_pylist) back into the JSON shapes of the journal."""
    import pyarrow as pa

    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if pa.types.is_map(t):
        return {k: py(v, t.item_type) for k, v in value}
    if pa.types.is_struct(t):
        return _py_struct(value, t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [py(v, t.value_type) for v in value]
    if pa.types.is_timestamp(t):
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.json":
        return msgspec.json.decode(value)
    if pa.types.is_date(t):
        return value.isoformat()
    if isinstance(t, pa.ExtensionType) or isinstance(value, bytes):
        return str(value) if not isinstance(value, bytes) else value.hex()
    return value


def _py_struct(value: dict[str, Any], t: Any) -> dict[str, Any]:
    """A struct back into the object it was: a null is an absent key unless ``_nulls`` names it.

    ``_extra`` is merged in, and keys ``_from_envelope`` names (metadata ids
    that stood in for keys the record lacked) are left out again. A struct
    without ``_nulls`` (layout 1) reads every null as an absent key.
    """
    nulls = value.get(NULLS) or ()
    out: dict[str, Any] = {}
    for f in t:
        name = f.name
        if name in INTERNAL:
            continue
        v = value.get(name)
        if v is not None:
            out[name] = py(v, f.type)
        elif name in nulls:
            out[name] = None
    extra = value.get(EXTRA)
    if extra is not None:
        out.update(msgspec.json.decode(extra) if isinstance(extra, (str, bytes)) else extra)
    for k in value.get(FROM_ENVELOPE) or ():
        if k in nulls:
            out[k] = None
        else:
            out.pop(k, None)
    return out


def parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Every row of a Parquet segment as the envelope its journal line held."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    types = {f.name: f.type for f in table.schema}
    for row in table.to_pylist():
        yield {k: py(v, types[k]) for k, v in row.items()}
