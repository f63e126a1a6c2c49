"""Parquet: an Arrow schema from a pydantic model, journal envelopes to a table, file bytes, unified read.

Pure functions with no threads and no knowledge of segments or rotation:
the sealer hands a sealed journal's record lines to :func:`encode` (the
format surface of ``recorder.storage.formats``), writes the file durably
with what it returns, and records the digest that writing returned. The
readers read files through :func:`read`, :func:`rows`, :func:`count`,
:func:`first_seq` and :func:`inspect` (``formats/_rows.py``).

A file holds one row per record line of the journal, in journal order::

    seq             int64 not null          the recorder's sequence number
    received        timestamp[us, UTC] not null
    schema_type     string not null
    schema_version  string not null
    record_id       string not null
    timestamp       timestamp[us, UTC]      the record's ``timestamp`` parsed (null if not a time)
    user_id         string not null
    session_id      string
    source          string
    action_id       string
    tags            map<string, string>
    producer        string not null
    pseq            int64 not null
    record          struct<...> not null    the record, typed from its model

Decisions:

- The record is one struct column, not flattened ``record.<field>`` columns.
  It keeps the record's own shape (nested models are structs anyway), a
  record field can never clash with an envelope column of the same name
  (every A3CP record carries ``record_id`` and ``timestamp``), and all
  readers address it directly: ``record.capture_id`` in DuckDB,
  ``table.flatten()`` or ``pyarrow.compute.struct_field`` in pyarrow.
- Types: ``str`` -> string, ``int`` -> int64, ``float`` -> float64, ``bool``
  -> bool, ``datetime`` -> timestamp[us, UTC], ``date`` -> date32, nested
  model -> struct, ``list``/``tuple[X, ...]``/``set`` -> list, ``dict[K, V]``
  -> map<K, V> (never a struct: its keys are data, such as class names or
  landmark names), ``Literal`` and enums -> string, ``X | None`` -> nullable
  X, ``int | float`` -> float64. ``Any``, ``dict[str, Any]``, bare ``dict``,
  other unions and every type not listed become a JSON column (the
  canonical ``arrow.json`` extension type, Parquet's JSON logical type; a
  plain string with pyarrow < 19) holding the value as compact JSON text.
  A column is named by the field's JSON key (its alias, if it has one); a
  model nested in itself is a JSON column below its first level.
- UUIDs (``uuid.UUID``, or a ``str`` whose pattern accepts canonical UUIDs
  and refuses malformed ones, like ``a3cp.Uuid``) become the canonical
  ``arrow.uuid`` extension type: 16 bytes, the Parquet UUID logical type,
  which DuckDB reads as ``UUID``. A pyarrow without it (< 18) gets a string
  column instead. The column holds the 128-bit value: the letter case of the
  journal's text is not kept.
- Timestamps hold the instant at microsecond precision, as pydantic's
  ``datetime`` does (further digits are cut, as pydantic cuts them); naive
  values are taken as UTC. The exact text (``Z`` or ``+00:00``, digits) is
  kept only by the JSONL journal.
- Nullability follows the model: a field is not null only when it is
  required and its type excludes None. Absent optional fields are null,
  not their model default: a row holds what the journal holds.
- Absent and null stay apart, at every depth: a null in a struct's field
  is an absent key, unless the key is listed in that struct's ``_nulls``
  column (list<string>, null when empty), which names the keys that were
  present with JSON null. Every struct whose model has a field whose type
  admits None gets ``_nulls``; an explicit null anywhere else cannot be
  kept and refuses the conversion. Nulls inside lists, map values and JSON
  text are values and stay where they are.
- Every model that does not forbid extra fields (and one without fields:
  Parquet has no empty struct) gets one more column, ``_extra``: the keys
  its fields do not declare, as a JSON object, or null when there are none.
- The layout's own columns come after the declared ones, in the order
  ``_nulls``, ``_from_envelope``, ``_extra``.
- Values the model accepted in lax form (``"3"`` for an int, ``1`` for a
  bool, an epoch number for a datetime) are converted as pydantic converts
  them; no record is validated again.
- Record fields the producer passed as metadata beside the record
  (``record_id``, ``schema_version``, ``user_id``, ``session_id``) are taken
  from the envelope when the record lacks them (or holds null), as
  validation did; the record struct's ``_from_envelope`` column
  (list<string>, null when empty; present when the model declares any of
  the four) names them, so a reader can give back the record as it was
  sent.

Several minor versions in one segment, or in the files read together, give
one schema: the union of each version's columns, where a column missing
from some version is nullable. A column whose type differs between
versions is an error (a minor version may only add fields).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from ...exceptions import ConversionError, UsageError, ValidationError
from ...schema.registry import parse_version
from ._arrow import (
    EXTRA,
    FROM_ENVELOPE,
    INTERNAL,
    JSON_TYPE,
    KEYS,
    NULLS,
    TIMESTAMP,
    Conv,
    array,
    fields_of,
    internal_last,
    merge_fields,
    model_keys,
    model_type,
    to_instant,
    to_int,
    to_str,
)
from ._bulk import envelope_row, no_gc, plain, shaper, typed_envelope
from ._rows import count, first_seq, inspect, read, rows

__all__ = [
    "EXTRA",
    "FORMAT_VERSION",
    "FROM_ENVELOPE",
    "INTERNAL",
    "JSON_TYPE",
    "NULLS",
    "arrow_schema",
    "concat",
    "count",
    "digest",
    "encode",
    "envelope_schema",
    "first_seq",
    "inspect",
    "read",
    "read_table",
    "rows",
    "table",
    "to_table",
    "write_to",
]

#: Version of this file layout, stored in each file's key-value metadata
#: (2: ``_nulls``, ``_from_envelope`` and JSON-typed text columns).
FORMAT_VERSION = 2

_META_FORMAT = b"recorder.format_version"
_META_TYPE = b"recorder.schema_type"
_META_VERSIONS = b"recorder.schema_versions"
#: Record fields that validation takes from the envelope when a record lacks them.
_FROM_ENVELOPE = ("record_id", "schema_version", "user_id", "session_id")
_CHUNK = 1 << 20


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The columns of a record of ``model``: one per field, plus ``_extra`` unless extras are forbidden.

    Args:
        model: a pydantic v2 model class.

    Returns:
        The Arrow schema; the module docstring has the type mapping.
    """
    return pa.schema(fields_of(model_type(model)))


# -- envelopes ------------------------------------------------------------------------

def _maybe_instant(value: Any) -> int | None:
    # The envelope timestamp is whatever the record called "timestamp": a model
    # whose timestamp is not a time keeps it in the record column only.
    try:
        return to_instant(value)
    except (ConversionError, ValueError, TypeError, OverflowError):
        return None


def _to_tags(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ConversionError(f"expected an object, got {type(value).__name__}")
    return [(to_str(k), to_str(v)) for k, v in value.items()]


_ENVELOPE: tuple[tuple[str, Any, bool, Conv], ...] = (
    ("seq", pa.int64(), False, to_int),
    ("received", TIMESTAMP, False, to_instant),
    ("schema_type", pa.string(), False, to_str),
    ("schema_version", pa.string(), False, to_str),
    ("record_id", pa.string(), False, to_str),
    ("timestamp", TIMESTAMP, True, _maybe_instant),
    ("user_id", pa.string(), False, to_str),
    ("session_id", pa.string(), True, to_str),
    ("source", pa.string(), True, to_str),
    ("action_id", pa.string(), True, to_str),
    ("tags", pa.map_(pa.string(), pa.string()), True, _to_tags),
    ("producer", pa.string(), False, to_str),
    ("pseq", pa.int64(), False, to_int),
)


def _envelope_fields() -> list[Any]:
    return [pa.field(name, t, nullable) for name, t, nullable, _ in _ENVELOPE]


def envelope_schema(model: type[BaseModel]) -> pa.Schema:
    """The columns of a Parquet file of ``model``: the envelope, then the record as one struct.

    Args:
        model: the pydantic model of the records.

    Returns:
        Envelope columns (``seq`` ... ``pseq``) followed by ``record``, a
        struct with the fields of :func:`arrow_schema`.
    """
    return pa.schema([*_envelope_fields(), pa.field("record", model_type(model), False)])


# -- unifying versions ----------------------------------------------------------------

def _unify(schemas: Sequence[Any], schema_type: str) -> Any:
    fields = list(schemas[0])
    for s in schemas[1:]:
        try:
            fields = merge_fields(fields, list(s), "")
        except ValueError as e:
            raise ValidationError(schema_type, "$", str(e)) from e
    return pa.schema(fields)


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    try:
        return parse_version(version), version
    except ValueError:
        return (), version


def _metadata(schema_type: str, versions: Iterable[str]) -> dict[bytes, bytes]:
    return {
        _META_FORMAT: str(FORMAT_VERSION).encode(),
        _META_TYPE: schema_type.encode(),
        _META_VERSIONS: msgspec.json.encode(sorted(set(versions), key=_version_key)),
    }


# -- journal envelopes -> table --------------------------------------------------------

def to_table(lines: Iterable[bytes | dict[str, Any]],
             model_for: Callable[[str], type[BaseModel]]) -> pa.Table:
    """Turn the record lines of one schema type into one table, in bulk.

    Each record is converted with the model of its own version; the table's
    ``record`` column has the union of the columns of every version present
    (columns added by a newer minor version are null in older rows). The
    journal's chain fields (``commit``, ``prev``, ``h``) are ignored. Each
    line takes one typed decode and each column one pyarrow call
    (``recorder.storage.formats._bulk``); a line with lax values is converted value by
    value, with the same result.

    Args:
        lines: record lines as stored (bytes, newline optional) or decoded
            (``msgspec.json.decode``'s dicts), in journal order.
        model_for: the model of a schema version (``TypeSpec.model_for``).

    Returns:
        A table with :func:`envelope_schema`'s columns, rows in input
        order, the schema type and versions present in its schema metadata.

    Raises:
        ValidationError: a line whose value cannot take its column's type
            (naming the line's ``seq`` and the field path), lines of several
            schema types, or versions whose models disagree on a column's type.
        UsageError: no lines at all (a file needs a record to know its schema).
    """
    raw = [line if isinstance(line, bytes) else msgspec.json.encode(line) for line in lines]
    if not raw:
        raise UsageError("lines", "no records: a Parquet file needs at least one record to know its schema")
    with no_gc():
        return _to_table(raw, model_for)


def _to_table(raw: list[bytes], model_for: Callable[[str], type[BaseModel]]) -> pa.Table:
    typed = [typed_envelope(line) for line in raw]
    decoded: dict[int, Any] = {i: msgspec.json.decode(raw[i]) for i, e in enumerate(typed) if e is None}
    first = typed[0]
    schema_type = first.schema_type if first is not None else str(_get(decoded[0], "schema_type"))
    models: dict[str, type[BaseModel]] = {}
    for i, env in enumerate(typed):
        version = env.schema_version if env is not None else str(_get(decoded[i], "schema_version"))
        if version not in models:
            models[version] = model_for(version)
    versions = sorted(models, key=_version_key)
    record_type = _record_type([models[v] for v in versions], schema_type)
    shapers = {v: shaper(m, _FROM_ENVELOPE) for v, m in models.items()}
    rows: list[tuple[Any, ...]] = []
    records: list[dict[str, Any]] = []
    for i, env in enumerate(typed):
        if env is not None and env.schema_type == schema_type:
            try:
                records.append(shapers[env.schema_version].typed(env))
                rows.append(envelope_row(env))
                continue
            except Exception as e:  # noqa: BLE001 - plain() says which mean "decide value by value"
                if not plain(e):
                    raise
        e_dict = decoded[i] if i in decoded else msgspec.json.decode(raw[i])
        try:
            row, record = _plain_line(e_dict, schema_type, shapers)
        except ConversionError as e:
            # nothing is made a table of what was converted so far
            raise ValidationError(schema_type, "".join(e.path) or "$",
                                  f"line seq {_get(e_dict, 'seq')}: {e.reason}") from e
        rows.append(row)
        records.append(record)
    schema = pa.schema([*_envelope_fields(), pa.field("record", record_type, False)],
                       metadata=_metadata(schema_type, versions))
    try:
        arrays = [array(list(col), f.type) for col, f in zip(zip(*rows), schema)]
        arrays.append(array(records, record_type))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise ValidationError(schema_type, "$", "a value does not fit its column's type") from e
    return pa.Table.from_arrays(arrays, schema=schema)


def _get(env: Any, key: str) -> Any:
    return env.get(key) if isinstance(env, dict) else None


def _record_type(models: Sequence[type[BaseModel]], schema_type: str) -> Any:
    """The record column's type: the union of the versions' structs (oldest first), plus ``_from_envelope``."""
    fields = fields_of(model_type(models[0]))
    try:
        for m in models[1:]:
            fields = merge_fields(fields, fields_of(model_type(m)), "")
    except ValueError as e:
        raise ValidationError(schema_type, "$", str(e)) from e
    if any(model_keys(m) & set(_FROM_ENVELOPE) for m in models):
        fields = internal_last([*fields, pa.field(FROM_ENVELOPE, KEYS, True)])
    return pa.struct(fields)


def _plain_line(env: Any, schema_type: str, shapers: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """One line's envelope columns and record, value by value (the rules the typed decode must agree with)."""
    if not isinstance(env, dict):
        raise ConversionError(f"expected an object, got {type(env).__name__}")
    if env.get("schema_type") != schema_type:
        raise ConversionError(f"is {env.get('schema_type')!r}, not {schema_type!r}: one file holds one type",
                              "schema_type")
    row: list[Any] = []
    for name, _, nullable, conv in _ENVELOPE:
        v = env.get(name)
        if v is None:
            if not nullable:
                raise ConversionError("missing from the envelope", name)
            row.append(None)
            continue
        try:
            row.append(conv(v))
        except ConversionError as e:
            e.path.insert(0, name)
            raise
    record = env.get("record")
    if record is None:
        raise ConversionError("missing from the envelope", "record")
    s = shapers[str(env["schema_version"])]
    try:
        shaped = s.full(record, s.fill(record, env))
    except ConversionError as e:
        e.path.insert(0, "record")
        raise
    return tuple(row), shaped


# -- writing and reading files -----------------------------------------------------------

class _HashingWriter:
    """A write-only file object that hashes every byte on its way to ``raw``.

    The Parquet writer only appends (it never seeks), so the bytes seen here
    are the file's bytes: its digest costs no second read.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._pos += view.nbytes
        self._raw.write(view)
        return view.nbytes

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self.closed = True  # the raw file belongs to whoever opened it

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _file_metadata(table: pa.Table) -> dict[bytes, bytes]:
    meta = dict(table.schema.metadata or {})
    names = table.column_names
    if "schema_type" in names and "schema_version" in names and table.num_rows:
        types_ = table.column("schema_type").unique().to_pylist()
        if len(types_) == 1:
            meta.update(_metadata(str(types_[0]), table.column("schema_version").unique().to_pylist()))
    meta.setdefault(_META_FORMAT, str(FORMAT_VERSION).encode())
    return meta


def write_to(f: BinaryIO, table: pa.Table) -> str:
    """Write ``table`` as Parquet bytes to ``f`` (only appended to); returns their hex sha256.

    zstd compression; the Arrow schema is stored, with key-value metadata
    ``recorder.format_version``, ``recorder.schema_type`` and
    ``recorder.schema_versions`` (a JSON array).
    """
    table = table.replace_schema_metadata(_file_metadata(table))
    out = _HashingWriter(f)
    pq.write_table(table, out, compression="zstd", store_schema=True)
    return out.hexdigest()


class _Encoded:
    """A table ready to become a Parquet file (the format surface's ``Encoded``)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.rows: int = table.num_rows

    def write(self, f: BinaryIO) -> str:
        return write_to(f, self.table)


def encode(lines: Sequence[bytes], model_for: Callable[[str], type[BaseModel]]) -> _Encoded:
    """The Parquet file of a sealed journal's record lines (see :func:`to_table`)."""
    return _Encoded(to_table(lines, model_for))


def table(data: bytes, model_for: Callable[[str], type[BaseModel]] | None = None) -> pa.Table:
    """A Parquet file's bytes as a table (the format surface; the file's own schema, ``model_for`` unused)."""
    return pq.read_table(pa.BufferReader(data))


def read_table(paths: Sequence[str | PathLike[str]]) -> pa.Table:
    """Read Parquet files of one schema type as one table with their unified schema.

    Columns a file lacks (added by a later minor version) are null in its
    rows; rows keep file order, then row order.

    Args:
        paths: the files, e.g. every sealed segment of a type.

    Returns:
        One table; its metadata lists every schema version present.

    Raises:
        UsageError: no paths, or files of different schema types.
        ValidationError: files whose versions disagree on a column's type.
    """
    if not paths:
        raise UsageError("paths", "read_table needs at least one file")
    return concat([pq.read_table(Path(p)) for p in paths])


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate tables of one schema type (files, or journals via to_table) under their unified schema.

    Raises:
        UsageError: no tables, or tables of different schema types.
        ValidationError: versions that disagree on a column's type.
    """
    if not tables:
        raise UsageError("tables", "concat needs at least one table")
    schema_types: set[str] = set()
    versions: list[str] = []
    for t in tables:
        meta = t.schema.metadata or {}
        if _META_TYPE in meta:
            schema_types.add(meta[_META_TYPE].decode())
        if _META_VERSIONS in meta:
            versions.extend(msgspec.json.decode(meta[_META_VERSIONS]))
    if len(schema_types) > 1:
        raise UsageError("tables", f"files of several schema types: {', '.join(sorted(schema_types))}")
    schema_type = schema_types.pop() if schema_types else "?"
    unified = _unify([t.schema.remove_metadata() for t in tables], schema_type)
    unified = unified.with_metadata(_metadata(schema_type, versions) if schema_type != "?" else {})
    conformed = []
    for t in tables:
        arrays = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
                  for f in unified]
        conformed.append(pa.Table.from_arrays(arrays, schema=unified))
    return pa.concat_tables(conformed)


def digest(path: str | PathLike[str]) -> str:
    """The hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
