"""One sealed segment as the rows a Delta table takes: provenance columns first, plain Delta types.

A segment is read from its Parquet file (a converted segment) or from its
journal (a JSONL type that opted in), after its digest is checked against
the manifest, and turned into one Arrow table per MAJOR version it holds.
Delta has no UUID or JSON type: ``arrow.uuid`` columns become canonical
UUID strings and ``arrow.json`` columns their JSON text. Every column is
nullable, so a newer minor version's columns and another recorder's rows
merge into one table schema.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import pyarrow as pa

from ..exceptions import PublishError
from ..storage import formats
from ..schema.registry import TypeSpec
from ._state import table_name

__all__ = ["FIRST", "lake_tables", "read_segment"]

#: columns put first: Delta keeps min/max statistics for the first 32 leaf columns, and a query by
#: user, session or time skips every file whose statistics exclude it
FIRST = ("user_id", "session_id", "timestamp", "recorder_id", "segment", "seq")


def _read(root: str, rel: str) -> bytes:
    fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_segment(root: str, manifest: dict[str, Any], spec: TypeSpec) -> pa.Table:
    """The rows of one sealed segment, checked against its manifest's digest.

    Raises:
        PublishError: the segment is not ready (a Parquet type not yet
            converted), its data is gone, or its digest differs from the manifest.
    """
    rel = str(manifest["path"])
    fmt, info = formats.of(manifest), formats.converted(manifest)
    try:
        if info:
            data = _read(root, str(info["path"]))
            if hashlib.sha256(data).hexdigest() != info.get("sha256"):
                raise PublishError(info["path"], "Parquet file differs from its manifest's digest; not published")
            return fmt.table(data, spec.model_for)
        if fmt.pending(manifest):
            raise PublishError(rel, "not converted to Parquet yet")
        data = _read(root, rel)
    except FileNotFoundError as e:
        raise PublishError(rel, f"data file missing: {e.filename}") from e
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise PublishError(rel, "journal differs from its manifest's digest; not published")
    return formats.for_path(rel).table(data, spec.model_for)


def _is_ext(t: Any) -> bool:
    return isinstance(t, pa.BaseExtensionType)


def _has_ext(t: Any) -> bool:
    if _is_ext(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_ext(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_ext(t.value_type)
    if pa.types.is_map(t):
        return _has_ext(t.key_type) or _has_ext(t.item_type)
    return False


def _plain_type(t: Any) -> Any:
    """``t`` with extension types replaced by strings, every field nullable."""
    if _is_ext(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(t.field(i).name, _plain_type(t.field(i).type), True)
                          for i in range(t.num_fields)])
    if pa.types.is_large_list(t):
        return pa.large_list(pa.field("item", _plain_type(t.value_type), True))
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(pa.field("item", _plain_type(t.value_type), True))
    if pa.types.is_map(t):
        return pa.map_(_plain_type(t.key_type), pa.field("value", _plain_type(t.item_type), True))
    return t


def _py(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _py(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_py(v) for v in value)
    return value


def _plain(arr: Any) -> Any:
    """One array with UUIDs as canonical strings and JSON as its text; unchanged when it has neither."""
    t = arr.type
    if not _has_ext(t):
        return arr.cast(_plain_type(t))
    if _is_ext(t):
        if str(getattr(t, "extension_name", "")) == "arrow.uuid":
            return pa.array([None if b is None else str(uuid.UUID(bytes=b)) for b in arr.storage.to_pylist()],
                            pa.string())
        return arr.storage.cast(pa.string())
    if pa.types.is_struct(t):
        children = arr.flatten()
        names = [t.field(i).name for i in range(t.num_fields)]
        mask = arr.is_null() if arr.null_count else None
        return pa.StructArray.from_arrays([_plain(c) for c in children], names=names, mask=mask)
    if pa.types.is_list(t) and arr.offset == 0:
        mask = arr.is_null() if arr.null_count else None
        return pa.ListArray.from_arrays(arr.offsets, _plain(arr.values), mask=mask)
    return pa.array(_py(arr.to_pylist()), _plain_type(t))  # maps and rarer shapes: through Python


def _column(col: Any) -> Any:
    chunks = [_plain(c) for c in col.chunks]
    return pa.chunked_array(chunks, type=_plain_type(col.type))


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 1


def lake_tables(segment: pa.Table, recorder_id: str, number: int, schema_type: str) -> dict[str, pa.Table]:
    """Table name -> the rows of one segment that go into it (one table per MAJOR version present).

    Columns: ``user_id, session_id, timestamp, recorder_id, segment, seq``
    first (the ones that get file statistics), then the rest of the envelope
    and ``record``.
    """
    n = segment.num_rows
    cols: dict[str, Any] = {name: _column(segment.column(name)) for name in segment.column_names}
    cols["recorder_id"] = pa.chunked_array([pa.array([recorder_id] * n, pa.string())])
    cols["segment"] = pa.chunked_array([pa.array([number] * n, pa.int64())])
    order = [c for c in FIRST if c in cols] + [c for c in segment.column_names if c not in FIRST]
    plain = pa.table({name: cols[name] for name in order})
    versions = plain.column("schema_version").to_pylist()
    majors = sorted({_major(str(v)) for v in versions})
    if len(majors) == 1:
        return {table_name(schema_type, majors[0]): plain}
    out = {}
    for major in majors:
        mask = pa.array([_major(str(v)) == major for v in versions])
        out[table_name(schema_type, major)] = plain.filter(mask)
    return out
