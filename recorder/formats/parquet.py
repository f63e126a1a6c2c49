"""Parquet: an Arrow schema from a pydantic model, journal envelopes to a table, atomic write, unified read.

Pure functions with no threads and no knowledge of segments or rotation:
the sealer decodes a journal segment, calls :func:`to_table`, then
:func:`write`, and records the digest that :func:`write` returns.

A file holds one row per record line of the journal, in journal order::

    seq             int64 not null          the recorder's sequence number
    received        timestamp[us, UTC] not null
    schema_type     string not null
    schema_version  string not null
    record_id       string not null
    timestamp       timestamp[us, UTC]      the record's ``timestamp``, parsed
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
  other unions and every type not listed become a string column holding the
  value as compact JSON text (JSON ``null`` is stored as null).
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
- Every model that does not forbid extra fields gets one more column,
  ``_extra``: the keys its fields do not declare, as a JSON object, or null.
- Values the model accepted in lax form (``"3"`` for an int, ``1`` for a
  bool, an epoch number for a datetime) are converted as pydantic converts
  them; no record is validated again.
- Record fields the producer passed as metadata beside the record
  (``record_id``, ``schema_version``, ``user_id``, ``session_id``) are taken
  from the envelope when the record lacks them, as validation did.

Several minor versions in one segment, or in the files read together, give
one schema: the union of each version's columns, where a column missing
from some version is nullable. A column whose type differs between
versions is an error (a minor version may only add fields).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from .. import _durable
from ..exceptions import ValidationError
from ..registry import parse_version

__all__ = [
    "EXTRA",
    "FORMAT_VERSION",
    "arrow_schema",
    "digest",
    "envelope_schema",
    "read_table",
    "to_table",
    "write",
]

#: Version of this file layout, stored in each file's key-value metadata.
FORMAT_VERSION = 1
#: Name of the JSON column holding a model's undeclared (extra) fields.
EXTRA = "_extra"

_META_FORMAT = b"recorder.format_version"
_META_TYPE = b"recorder.schema_type"
_META_VERSIONS = b"recorder.schema_versions"

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_UUID = pa.uuid() if hasattr(pa, "uuid") else pa.string()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
#: Record fields that validation takes from the envelope when a record lacks them.
_FROM_ENVELOPE = ("record_id", "schema_version", "user_id", "session_id")
_CHUNK = 1 << 20

_Conv = Callable[[Any], Any]


class _Bad(Exception):
    """A value that cannot take its column's type; ``path`` grows as it unwinds."""

    def __init__(self, reason: str, *path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = list(path)


# -- leaf conversions: JSON value -> what pyarrow takes for the column -----------------

def _lax(target: Any, what: str) -> _Conv:
    adapter: TypeAdapter[Any] = TypeAdapter(target)

    def convert(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except Exception as e:  # pydantic's error, or whatever a validator raised
            raise _Bad(f"{value!r} is not a valid {what}") from e

    return convert


_lax_int = _lax(int, "integer")
_lax_float = _lax(float, "number")
_lax_bool = _lax(bool, "boolean")
_lax_datetime = _lax(datetime, "datetime")
_lax_date = _lax(date, "date")
_UUID_TYPED = _UUID != pa.string()


def _json_text(value: Any) -> str:
    # msgspec re-encodes a decoded value to the journal's own compact text
    return msgspec.json.encode(value).decode()


def _to_str(value: Any) -> Any:
    return value if type(value) is str else _json_text(value)


def _to_int(value: Any) -> Any:
    return value if type(value) is int else _lax_int(value)


def _to_float(value: Any) -> Any:
    t = type(value)
    return value if t is float or t is int else _lax_float(value)


def _to_bool(value: Any) -> Any:
    return value if type(value) is bool else _lax_bool(value)


def _to_instant(value: Any) -> int:
    """A JSON value -> integer microseconds since the Unix epoch, UTC."""
    dt: datetime
    if type(value) is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            dt = _lax_datetime(value)
    else:
        dt = _lax_datetime(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # naive: on-disk times are UTC by convention
    return (dt - _EPOCH) // _MICROSECOND


def _to_date(value: Any) -> Any:
    if type(value) is str:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return _lax_date(value)


def _to_uuid(value: Any) -> Any:
    try:
        u = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    except (TypeError, ValueError, AttributeError) as e:
        raise _Bad(f"{value!r} is not a UUID") from e
    return u.bytes if _UUID_TYPED else str(u)


# -- the plan of a model: Arrow types and conversions, derived once per model -----------

@dataclass(frozen=True)
class _Node:
    """One column of a model: its Arrow type, nullability, and how its JSON values convert.

    ``kind`` is ``leaf`` (``conv`` converts a value; values whose Python type
    is ``exact`` pass unchanged), ``struct`` (``fields``: (JSON key, field
    name, node); ``extra``: whether undeclared keys go to ``_extra``),
    ``list`` (``item``) or ``map`` (``key``, ``item``).
    """

    type: Any
    nullable: bool
    kind: str = "leaf"
    conv: _Conv | None = None
    exact: type | None = None
    fields: tuple[tuple[str, str, _Node], ...] = ()
    extra: bool = False
    item: _Node | None = None
    key: _Node | None = None

    def with_nullable(self, nullable: bool) -> _Node:
        return dataclasses.replace(self, nullable=nullable)


def _patterns(metadata: Iterable[Any]) -> list[str]:
    found: list[str] = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            found.extend(_patterns(m.metadata))
            continue
        p = getattr(m, "pattern", None)
        if isinstance(p, re.Pattern):
            p = p.pattern
        if isinstance(p, str):
            found.append(p)
    return found


_UUID_PROBE = "0f8fad5b-d9cb-469f-a165-70867728950e"
# Strings uuid.UUID() refuses (it tolerates surrounding whitespace and braces).
_NOT_UUIDS = ("", "x", "-" * 36, "0f8fad5g-d9cb-469f-a165-70867728950e", _UUID_PROBE + "0",
              _UUID_PROBE[:-1], _UUID_PROBE.replace("-", "_"))


def _is_uuid_pattern(pattern: str) -> bool:
    """True if ``pattern`` accepts a canonical UUID and refuses each malformed probe."""
    try:
        rx = re.compile(pattern)
    except re.error:
        return False
    # like pydantic, search: a pattern matches anywhere unless it anchors itself
    return rx.search(_UUID_PROBE) is not None and not any(rx.search(s) for s in _NOT_UUIDS)


def _leaf(t: Any, conv: _Conv, exact: type | None = None, nullable: bool = False) -> _Node:
    return _Node(t, nullable, conv=conv, exact=exact)


def _json(nullable: bool) -> _Node:
    return _leaf(pa.string(), _json_text, None, nullable)


def _node(tp: Any, metadata: list[Any], stack: tuple[type[BaseModel], ...]) -> _Node:
    """The column of annotation ``tp``, given the field's constraint metadata."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _node(args[0], [*metadata, *args[1:]], stack)
    if origin is typing.Union or origin is types.UnionType:
        rest = [a for a in args if a is not type(None)]
        nullable = len(rest) < len(args)
        if len(rest) == 1:
            n = _node(rest[0], metadata, stack)
            return n.with_nullable(n.nullable or nullable)
        if {str(_node(a, [], stack).type) for a in rest} <= {"int64", "double"}:
            return _leaf(pa.float64(), _to_float, float, nullable)
        return _json(nullable)
    if origin is typing.Literal:
        return _leaf(pa.string(), _to_str, str, None in args)
    if tp is Any or tp is object or tp is type(None):
        return _json(True)
    if isinstance(tp, type) and origin is None:
        if issubclass(tp, Enum):
            return _leaf(pa.string(), _to_str, str)
        if tp is bool:
            return _leaf(pa.bool_(), _to_bool, bool)
        if tp is int:
            return _leaf(pa.int64(), _to_int, int)
        if tp is float:
            return _leaf(pa.float64(), _to_float, float)
        if tp is str:
            if any(_is_uuid_pattern(p) for p in _patterns(metadata)):
                return _leaf(_UUID, _to_uuid)
            return _leaf(pa.string(), _to_str, str)
        if issubclass(tp, uuid.UUID):
            return _leaf(_UUID, _to_uuid)
        if issubclass(tp, datetime):
            return _leaf(_TIMESTAMP, _to_instant)
        if issubclass(tp, date):
            return _leaf(pa.date32(), _to_date)
        if issubclass(tp, BaseModel):
            if tp in stack:
                return _json(False)  # a recursive model has no finite Arrow type
            return _model_node(tp, stack)
    homogeneous_tuple = origin is tuple and len(args) == 2 and args[1] is Ellipsis
    if origin in (list, set, frozenset, Sequence) or homogeneous_tuple:
        item = _node(args[0], [], stack) if args else _json(True)
        return _Node(pa.list_(pa.field("item", item.type, item.nullable)), False, "list", item=item)
    if origin in (dict, Mapping) and len(args) == 2 and args[1] is not Any:
        key = _node(args[0], [], stack)
        if key.nullable or key.kind != "leaf":
            return _json(False)
        item = _node(args[1], [], stack)
        return _Node(pa.map_(key.type, pa.field("value", item.type, item.nullable)), False, "map",
                     item=item, key=key)
    return _json(False)


def _key(name: str, info: FieldInfo) -> str:
    """The key a field has in the JSON the journal holds."""
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return info.alias or name


_models: dict[type[BaseModel], _Node] = {}


def _model_node(model: type[BaseModel], stack: tuple[type[BaseModel], ...] = ()) -> _Node:
    cached = _models.get(model)
    if cached is not None:
        return cached
    fields: list[tuple[str, str, _Node]] = []
    for name, info in model.model_fields.items():
        n = _node(info.annotation, list(info.metadata), (*stack, model))
        fields.append((_key(name, info), name, n.with_nullable(n.nullable or not info.is_required())))
    extra = model.model_config.get("extra") != "forbid"
    arrow = [pa.field(k, n.type, n.nullable) for k, _, n in fields]
    if extra:
        arrow.append(pa.field(EXTRA, pa.string(), True))
    node = _Node(pa.struct(arrow), False, "struct", fields=tuple(fields), extra=extra)
    if not stack:  # a node built under a recursion guard may differ: cache roots only
        _models[model] = node
    return node


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The columns of a record of ``model``: one per field, plus ``_extra`` unless extras are forbidden.

    Args:
        model: a pydantic v2 model class.

    Returns:
        The Arrow schema; the module docstring has the type mapping.
    """
    return pa.schema(_fields(_model_node(model).type))


# -- column builders: values go straight into per-column Python lists -----------------

def _filler(t: Any) -> Any:
    """A placeholder for a non-nullable child of a null struct (the Parquet writer wants one)."""
    if isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    if pa.types.is_boolean(t):
        return False
    if pa.types.is_integer(t) or pa.types.is_temporal(t):
        return 0
    if pa.types.is_floating(t):
        return 0.0
    if pa.types.is_fixed_size_binary(t):
        return bytes(t.byte_width)
    if pa.types.is_string(t):
        return ""
    if pa.types.is_binary(t):
        return b""
    return None


class _Builder:
    """The values of one column of the table being built, in row order."""

    def __init__(self, t: Any) -> None:
        self.type = t

    def null(self) -> None:
        raise NotImplementedError

    def filler(self) -> None:
        raise NotImplementedError

    def finish(self) -> Any:
        raise NotImplementedError


class _LeafBuilder(_Builder):
    def __init__(self, t: Any) -> None:
        super().__init__(t)
        self.values: list[Any] = []
        self._fill = _filler(t)

    def null(self) -> None:
        self.values.append(None)

    def filler(self) -> None:
        self.values.append(self._fill)

    def finish(self) -> Any:
        return _array(self.values, self.type)


def _mask(mask: list[bool]) -> Any:
    return pa.array(mask, pa.bool_()) if any(mask) else None


class _StructBuilder(_Builder):
    def __init__(self, t: Any) -> None:
        super().__init__(t)
        self.fields = _fields(t)
        self.children = {f.name: _builder(f.type) for f in self.fields}
        self.mask: list[bool] = []

    def null(self) -> None:
        self.mask.append(True)
        for f in self.fields:
            c = self.children[f.name]
            c.filler() if not f.nullable else c.null()

    def filler(self) -> None:
        self.mask.append(False)
        for f in self.fields:
            c = self.children[f.name]
            c.filler() if not f.nullable else c.null()

    def finish(self) -> Any:
        if not self.fields:
            return pa.array([None if m else {} for m in self.mask], self.type)
        arrays = [self.children[f.name].finish() for f in self.fields]
        return pa.StructArray.from_arrays(arrays, fields=self.fields, mask=_mask(self.mask))


class _ListBuilder(_Builder):
    def __init__(self, t: Any) -> None:
        super().__init__(t)
        self.offsets = [0]
        self.mask: list[bool] = []
        self.item_nullable: bool = t.value_field.nullable if not pa.types.is_map(t) else t.item_field.nullable
        self.item = _builder(t.value_type if not pa.types.is_map(t) else t.item_type)

    def null(self) -> None:
        self.offsets.append(self.offsets[-1])
        self.mask.append(True)

    def filler(self) -> None:
        self.offsets.append(self.offsets[-1])
        self.mask.append(False)

    def finish(self) -> Any:
        offsets = pa.array(self.offsets, pa.int32())
        return pa.ListArray.from_arrays(offsets, self.item.finish(), type=self.type, mask=_mask(self.mask))


class _MapBuilder(_ListBuilder):
    def __init__(self, t: Any) -> None:
        super().__init__(t)
        self.key = _builder(t.key_type)

    def finish(self) -> Any:
        offsets = pa.array(self.offsets, pa.int32())
        return pa.MapArray.from_arrays(offsets, self.key.finish(), self.item.finish(), type=self.type,
                                       mask=_mask(self.mask))


def _builder(t: Any) -> _Builder:
    if pa.types.is_struct(t):
        return _StructBuilder(t)
    if pa.types.is_map(t):
        return _MapBuilder(t)
    if pa.types.is_list(t):
        return _ListBuilder(t)
    return _LeafBuilder(t)


_Add = Callable[[Any], None]


def _bind(node: _Node, b: _Builder) -> _Add:
    """A function appending one non-null JSON value, converted per ``node``, to ``b``.

    ``b`` may hold more than ``node`` declares (the union of several
    versions): what ``node`` lacks is appended as null.
    """
    if node.kind == "struct":
        return _bind_struct(node, b)
    if node.kind in ("list", "map"):
        return _bind_list(node, b)
    assert isinstance(b, _LeafBuilder) and node.conv is not None
    values, conv, exact = b.values, node.conv, node.exact
    if exact is None:
        return lambda v: values.append(conv(v))
    return lambda v: values.append(v if type(v) is exact else conv(v))


def _bind_struct(node: _Node, b: _Builder) -> _Add:
    assert isinstance(b, _StructBuilder)
    steps = [(key, name, _bind(n, b.children[key]), b.children[key], n.nullable) for key, name, n in node.fields]
    mine = {key for key, _, _ in node.fields}
    known = frozenset(mine | {name for _, name, _ in node.fields})
    absent = [c for k, c in b.children.items() if k not in mine and (k != EXTRA or not node.extra)]
    extra = b.children[EXTRA].values if node.extra else None  # type: ignore[attr-defined]
    mask = b.mask

    def add(value: Any) -> None:
        if not isinstance(value, dict):
            raise _Bad(f"expected an object, got {type(value).__name__}")
        for key, name, add_child, child, nullable in steps:
            v = value.get(key)
            if v is None and name != key:
                v = value.get(name)  # populate_by_name: the field under its own name
            if v is None:
                if not nullable:
                    raise _Bad("missing, but the model requires it", f".{key}")
                child.null()
                continue
            try:
                add_child(v)
            except _Bad as e:
                e.path.insert(0, f".{key}")
                raise
        for child in absent:
            child.null()
        if extra is not None:
            extra.append(None if known.issuperset(value) else
                         _json_text({k: v for k, v in value.items() if k not in known}))
        mask.append(False)

    return add


def _bind_list(node: _Node, b: _Builder) -> _Add:
    assert isinstance(b, _ListBuilder) and node.item is not None
    item, add_item, nullable = b.item, _bind(node.item, b.item), node.item.nullable
    offsets, mask = b.offsets, b.mask
    if node.kind == "list":
        def add(value: Any) -> None:
            if not isinstance(value, list):
                raise _Bad(f"expected an array, got {type(value).__name__}")
            for i, v in enumerate(value):
                try:
                    if v is not None:
                        add_item(v)
                    elif nullable:
                        item.null()
                    else:
                        raise _Bad("null, but the model does not allow it")
                except _Bad as e:
                    e.path.insert(0, f"[{i}]")
                    raise
            offsets.append(offsets[-1] + len(value))
            mask.append(False)

        return add

    assert isinstance(b, _MapBuilder) and node.key is not None
    add_key = _bind(node.key, b.key)

    def add_map(value: Any) -> None:
        if not isinstance(value, dict):
            raise _Bad(f"expected an object, got {type(value).__name__}")
        for k, v in value.items():
            try:
                add_key(k)
                if v is not None:
                    add_item(v)
                elif nullable:
                    item.null()
                else:
                    raise _Bad("null, but the model does not allow it")
            except _Bad as e:
                e.path.insert(0, f"[{k!r}]")
                raise
        offsets.append(offsets[-1] + len(value))
        mask.append(False)

    return add_map


# -- envelopes ------------------------------------------------------------------------

def _maybe_instant(value: Any) -> int | None:
    # The envelope timestamp is whatever the record called "timestamp": a model
    # whose timestamp is not a time keeps it in the record column only.
    try:
        return _to_instant(value)
    except (_Bad, ValueError, TypeError, OverflowError):
        return None


def _to_tags(value: Any) -> Any:
    if not isinstance(value, dict):
        raise _Bad(f"expected an object, got {type(value).__name__}")
    return [(_to_str(k), _to_str(v)) for k, v in value.items()]


_ENVELOPE: tuple[tuple[str, Any, bool, _Conv], ...] = (
    ("seq", pa.int64(), False, _to_int),
    ("received", _TIMESTAMP, False, _to_instant),
    ("schema_type", pa.string(), False, _to_str),
    ("schema_version", pa.string(), False, _to_str),
    ("record_id", pa.string(), False, _to_str),
    ("timestamp", _TIMESTAMP, True, _maybe_instant),
    ("user_id", pa.string(), False, _to_str),
    ("session_id", pa.string(), True, _to_str),
    ("source", pa.string(), True, _to_str),
    ("action_id", pa.string(), True, _to_str),
    ("tags", pa.map_(pa.string(), pa.string()), True, _to_tags),
    ("producer", pa.string(), False, _to_str),
    ("pseq", pa.int64(), False, _to_int),
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
    return pa.schema([*_envelope_fields(), pa.field("record", _model_node(model).type, False)])


# -- unifying versions -------------------------------------------------------------------

def _fields(t: Any) -> list[Any]:
    return [t.field(i) for i in range(t.num_fields)]


def _merge_fields(a: Sequence[Any], b: Sequence[Any], where: str) -> list[Any]:
    """Union of two field lists by name; a field missing from one side becomes nullable."""
    by_a = {f.name: f for f in a}
    by_b = {f.name: f for f in b}
    names = [f.name for f in a] + [f.name for f in b if f.name not in by_a]
    out = []
    for name in names:
        fa, fb = by_a.get(name), by_b.get(name)
        if fa is None:
            out.append(by_b[name].with_nullable(True))
        elif fb is None:
            out.append(fa.with_nullable(True))
        else:
            t = _merge_type(fa.type, fb.type, f"{where}.{name}" if where else name)
            out.append(pa.field(name, t, fa.nullable or fb.nullable))
    # keep the catch-all last, after the columns newer versions add
    return [f for f in out if f.name != EXTRA] + [f for f in out if f.name == EXTRA]


def _merge_type(a: Any, b: Any, where: str) -> Any:
    if a.equals(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        return pa.struct(_merge_fields(_fields(a), _fields(b), where))
    if pa.types.is_map(a) and pa.types.is_map(b):
        key = _merge_type(a.key_type, b.key_type, f"{where}.key")
        item = _merge_fields([a.item_field], [b.item_field], where)[0]
        return pa.map_(key, item)
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge_fields([a.value_field], [b.value_field], where)[0])
    raise ValueError(f"column {where!r} is {a} in one version and {b} in another; "
                     "a minor version may only add fields")


def _unify(schemas: Sequence[Any], schema_type: str) -> Any:
    fields = list(schemas[0])
    for s in schemas[1:]:
        try:
            fields = _merge_fields(fields, list(s), "")
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


def _storage(t: Any) -> Any:
    """``t`` with every extension type replaced by its storage type."""
    if isinstance(t, pa.BaseExtensionType):
        return t.storage_type
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_storage(f.type)) for f in _fields(t)])
    if pa.types.is_map(t):
        return pa.map_(_storage(t.key_type), t.item_field.with_type(_storage(t.item_type)))
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_storage(t.value_type)))
    return t


def _array(values: list[Any], t: Any) -> Any:
    # pyarrow cannot build extension values (arrow.uuid) nested in Python
    # objects: build the storage (16-byte binary) and cast, which is free.
    storage = _storage(t)
    array = pa.array(values, type=storage)
    return array if storage.equals(t) else array.cast(t)


# -- journal envelopes -> table --------------------------------------------------------

def to_table(envelopes: Iterable[dict[str, Any]],
             model_for: Callable[[str], type[BaseModel]]) -> pa.Table:
    """Turn decoded journal record lines of one schema type into one table.

    Each record is converted with the model of its own version; the table's
    ``record`` column has the union of the columns of every version present
    (columns added by a newer minor version are null in older rows). The
    journal's chain fields (``commit``, ``prev``, ``h``) are ignored.

    Args:
        envelopes: record lines as ``msgspec.json.decode`` returns them, in journal order.
        model_for: the model of a schema version (``TypeSpec.model_for``).

    Returns:
        A table with :func:`envelope_schema`'s columns, rows in input
        order, the schema type and versions present in its schema metadata.

    Raises:
        ValidationError: a line whose value cannot take its column's type
            (naming the line's ``seq`` and the field path), lines of several
            schema types, or versions whose models disagree on a column's type.
        ValueError: no envelopes at all (a file needs a record to know its schema).
    """
    lines = list(envelopes)
    if not lines:
        raise ValueError("no records: a Parquet file needs at least one record to know its schema")
    schema_type = str(lines[0].get("schema_type"))
    nodes: dict[str, _Node] = {}
    for env in lines:
        version = str(env.get("schema_version"))
        if version not in nodes:
            nodes[version] = _model_node(model_for(version))
    # oldest version first, so columns a newer one adds come after the old ones
    versions = sorted(nodes, key=_version_key)
    unified = _unify([pa.schema(_fields(nodes[v].type)) for v in versions], schema_type)
    record_type = pa.struct(list(unified))
    records = _StructBuilder(record_type)
    adders = {v: _bind(n, records) for v, n in nodes.items()}
    keys = {v: {k for k, _, _ in n.fields} for v, n in nodes.items()}
    columns: list[list[Any]] = [[] for _ in _ENVELOPE]
    for env in lines:
        try:
            if env.get("schema_type") != schema_type:
                raise _Bad(f"is {env.get('schema_type')!r}, not {schema_type!r}: one file holds one type",
                           "schema_type")
            for i, (name, _, nullable, conv) in enumerate(_ENVELOPE):
                v = env.get(name)
                if v is None:
                    if not nullable:
                        raise _Bad("missing from the envelope", name)
                    columns[i].append(None)
                    continue
                try:
                    columns[i].append(conv(v))
                except _Bad as e:
                    e.path.insert(0, name)
                    raise
            version = str(env["schema_version"])
            record = env.get("record")
            if isinstance(record, dict):
                declared = keys[version]
                missing = [k for k in _FROM_ENVELOPE
                           if k in declared and record.get(k) is None and env.get(k) is not None]
                if missing:  # given as metadata beside the record: validation used these
                    record = {**record, **{k: env[k] for k in missing}}
            elif record is None:
                raise _Bad("missing from the envelope", "record")
            try:
                adders[version](record)
            except _Bad as e:
                e.path.insert(0, "record")
                raise
        except _Bad as e:
            # a row may be half appended: no table is built from these builders
            raise ValidationError(schema_type, "".join(e.path) or "$",
                                  f"line seq {env.get('seq')}: {e.reason}") from e
    schema = pa.schema([*_envelope_fields(), pa.field("record", record_type, False)],
                       metadata=_metadata(schema_type, versions))
    arrays = [_array(col, f.type) for col, f in zip(columns, schema)]
    arrays.append(records.finish())
    return pa.Table.from_arrays(arrays, schema=schema)


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
        self.closed = True  # the raw file belongs to _durable.publish

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


def write(dir_fd: int, name: str, table: pa.Table, label: str) -> str:
    """Write ``table`` as the Parquet file ``name`` in ``dir_fd``, whole or not at all.

    The file is written to a hidden temporary name, fsync'd, renamed into
    place and the directory fsync'd (:func:`recorder._durable.publish`).
    zstd compression; the Arrow schema is stored, with key-value metadata
    ``recorder.format_version``, ``recorder.schema_type`` and
    ``recorder.schema_versions`` (a JSON array).

    Args:
        dir_fd: the directory, opened by ``_durable.open_dirs``.
        name: the final file name.
        table: a table from :func:`to_table`.
        label: the path named in errors.

    Returns:
        The hex sha256 of the file, computed from the bytes as they were written.

    Raises:
        StorageFull: the disk is full; no file is left under ``name``.
        DurabilityError: a write, fsync or rename failed; likewise.
    """
    table = table.replace_schema_metadata(_file_metadata(table))
    digests: list[str] = []

    def fill(f: BinaryIO) -> None:
        out = _HashingWriter(f)
        pq.write_table(table, out, compression="zstd", store_schema=True)
        digests.append(out.hexdigest())

    _durable.publish(dir_fd, name, fill, label)
    return digests[0]


def read_table(paths: Sequence[str | PathLike[str]]) -> pa.Table:
    """Read Parquet files of one schema type as one table with their unified schema.

    Columns a file lacks (added by a later minor version) are null in its
    rows; rows keep file order, then row order.

    Args:
        paths: the files, e.g. every sealed segment of a type.

    Returns:
        One table; its metadata lists every schema version present.

    Raises:
        ValueError: no paths, or files of different schema types.
        ValidationError: files whose versions disagree on a column's type.
    """
    if not paths:
        raise ValueError("read_table needs at least one file")
    tables = [pq.read_table(Path(p)) for p in paths]
    schema_types: set[str] = set()
    versions: list[str] = []
    for t in tables:
        meta = t.schema.metadata or {}
        if _META_TYPE in meta:
            schema_types.add(meta[_META_TYPE].decode())
        if _META_VERSIONS in meta:
            versions.extend(msgspec.json.decode(meta[_META_VERSIONS]))
    if len(schema_types) > 1:
        raise ValueError(f"files of several schema types: {', '.join(sorted(schema_types))}")
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
