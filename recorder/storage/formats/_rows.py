"""Reading Parquet data files: their rows back into envelopes (the journal's JSON shapes, absent and null
apart), a few columns or the rows after a ``seq`` as a table, and what the footer says.

Pure, and pyarrow is imported only when a file is read: ``formats/parquet.py`` gives these as its part of
the format surface (``Format.read``, ``rows``, ``count``, ``first_seq``, ``inspect``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import timezone
from os import PathLike
from typing import Any, BinaryIO

import msgspec

from ._layout import EXTRA, FROM_ENVELOPE, INTERNAL, NULLS

__all__ = ["count", "first_seq", "inspect", "py", "read", "rows"]

#: a data file: its path, or the file opened for reading (binary)
Source = str | PathLike[str] | BinaryIO


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


def read(source: Source, columns: Sequence[str] | None = None, after_seq: int | None = None) -> Any:
    """A Parquet file's records as a ``pyarrow.Table``: only ``columns`` (None: all), only the rows whose
    ``seq`` is above ``after_seq`` (None: all); both are pushed down to the file's column chunks and row groups."""
    import pyarrow.parquet as pq

    return pq.read_table(source, columns=None if columns is None else list(columns),
                         filters=None if after_seq is None else [("seq", ">", after_seq)])


def rows(source: Source, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
    """Every row of a Parquet file as the envelope its journal line held; with ``batch_size``, read that many
    rows at a time (a row's conversion costs tens of µs), else the whole file at once."""
    import pyarrow.parquet as pq

    if batch_size is None:
        table = pq.read_table(source)
        types = {f.name: f.type for f in table.schema}
        for row in table.to_pylist():
            yield {k: py(v, types[k]) for k, v in row.items()}
        return
    pf = pq.ParquetFile(source)
    types = {f.name: f.type for f in pf.schema_arrow}
    for batch in pf.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield {k: py(v, types[k]) for k, v in row.items()}


def count(source: Source) -> int:
    """The rows of a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(source).metadata.num_rows)


def first_seq(source: Source) -> int | None:
    """The ``seq`` of a Parquet file's first row (its first row group's ``seq`` column only); None if empty."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(source)
    if pf.metadata.num_rows == 0:
        return None
    return int(pf.read_row_group(0, columns=["seq"]).column("seq")[0].as_py())


def inspect(source: Source) -> tuple[int | None, str, str]:
    """(rows or None, the place in the file, why it is unreadable) from the footer and row-group metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(source).metadata
    except (pa.ArrowException, OSError, ValueError) as e:
        return None, "footer (file metadata)", str(e)
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    n = len(groups)
    where = (f"row group 0 ({groups[0]} rows)" if n == 1 else
             f"row groups 0-{n - 1} ({'+'.join(map(str, groups))} rows)" if n else "no row groups")
    return int(meta.num_rows), where, ""
