"""Arrow types for pydantic models: the plan of each model's column, and the conversion of its leaves.

The format-independent half of the Parquet output: :func:`model_node` derives
from a model the Arrow type of its records and how each JSON value converts
(the mapping is documented in ``recorder.storage.formats.parquet``);
:func:`merge_fields` unifies the schemas of several versions or files. The
conversion of whole records in bulk is ``recorder.storage.formats._bulk``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import msgspec
import pyarrow as pa
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from ...exceptions import ConversionError, ValidationError
from ._layout import EXTRA, FROM_ENVELOPE, INTERNAL, NULLS

__all__ = ["EXTRA", "FROM_ENVELOPE", "INTERNAL", "JSON_TYPE", "KEYS", "NULLS", "TIMESTAMP", "UUID_TYPE", "Conv",
           "Node", "array", "fields_of", "internal_last", "json_text", "merge_fields", "model_keys", "model_node",
           "model_type", "storage", "to_instant", "to_int", "to_str"]

TIMESTAMP = pa.timestamp("us", tz="UTC")
#: The canonical UUID extension type (pyarrow >= 18), else a string.
UUID_TYPE = pa.uuid() if hasattr(pa, "uuid") else pa.string()
#: The canonical JSON extension type (pyarrow >= 19; Parquet's JSON logical type), else a string.
JSON_TYPE = pa.json_() if hasattr(pa, "json_") else pa.string()
KEYS = pa.list_(pa.string())
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

Conv = Callable[[Any], Any]


# -- leaf conversions: JSON value -> what pyarrow takes for the column -----------------

def _lax(target: Any, what: str) -> Conv:
    adapter: TypeAdapter[Any] = TypeAdapter(target)

    def convert(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except Exception as e:  # pydantic's error, or whatever a validator raised
            raise ConversionError(f"{value!r} is not a valid {what}") from e

    return convert


_lax_int = _lax(int, "integer")
_lax_float = _lax(float, "number")
_lax_bool = _lax(bool, "boolean")
_lax_datetime = _lax(datetime, "datetime")
_lax_date = _lax(date, "date")
_UUID_TYPED = UUID_TYPE != pa.string()


def json_text(value: Any) -> str:
    # msgspec re-encodes a decoded value to the journal's own compact text
    return msgspec.json.encode(value).decode()


def to_str(value: Any) -> Any:
    """A string as it is; anything else as its JSON text."""
    return value if type(value) is str else json_text(value)


def to_int(value: Any) -> Any:
    """An int as it is; any other value pydantic takes for an int, converted as pydantic does."""
    return value if type(value) is int else _lax_int(value)


def _to_float(value: Any) -> Any:
    t = type(value)
    return value if t is float or t is int else _lax_float(value)


def _to_bool(value: Any) -> Any:
    return value if type(value) is bool else _lax_bool(value)


def to_instant(value: Any) -> int:
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
        raise ConversionError(f"{value!r} is not a UUID") from e
    return u.bytes if _UUID_TYPED else str(u)


# -- the plan of a model: Arrow types and conversions, derived once per model -----------

@dataclass(frozen=True)
class Node:
    """One column of a model: its Arrow type, nullability, and how its JSON values convert.

    ``kind`` is ``leaf`` (``conv`` converts a value; values whose Python type
    is ``exact`` pass unchanged), ``struct`` (``fields``: (JSON key, field
    name, node); ``extra``: whether undeclared keys go to ``_extra``;
    ``nulls``: whether the struct has a ``_nulls`` column), ``list``
    (``item``) or ``map`` (``key``, ``item``). ``nullable`` is the Arrow
    nullability; ``null_ok`` whether the type itself admits JSON null.
    """

    type: Any
    nullable: bool
    kind: str = "leaf"
    conv: Conv | None = None
    exact: type | None = None
    fields: tuple[tuple[str, str, Node], ...] = ()
    extra: bool = False
    nulls: bool = False
    item: Node | None = None
    key: Node | None = None
    null_ok: bool = False

    def with_nullable(self, nullable: bool) -> Node:
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


def _leaf(t: Any, conv: Conv, exact: type | None = None, nullable: bool = False) -> Node:
    return Node(t, nullable, conv=conv, exact=exact)


def _json(nullable: bool) -> Node:
    return _leaf(JSON_TYPE, json_text, None, nullable)


def _node(tp: Any, metadata: list[Any], stack: tuple[type[BaseModel], ...]) -> Node:
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
        return _leaf(pa.string(), to_str, str, None in args)
    if tp is Any or tp is object or tp is type(None):
        return _json(True)
    if isinstance(tp, type) and origin is None:
        if issubclass(tp, Enum):
            return _leaf(pa.string(), to_str, str)
        if tp is bool:
            return _leaf(pa.bool_(), _to_bool, bool)
        if tp is int:
            return _leaf(pa.int64(), to_int, int)
        if tp is float:
            return _leaf(pa.float64(), _to_float, float)
        if tp is str:
            if any(_is_uuid_pattern(p) for p in _patterns(metadata)):
                return _leaf(UUID_TYPE, _to_uuid)
            return _leaf(pa.string(), to_str, str)
        if issubclass(tp, uuid.UUID):
            return _leaf(UUID_TYPE, _to_uuid)
        if issubclass(tp, datetime):
            return _leaf(TIMESTAMP, to_instant)
        if issubclass(tp, date):
            return _leaf(pa.date32(), _to_date)
        if issubclass(tp, BaseModel):
            if tp in stack:
                return _json(False)  # a recursive model has no finite Arrow type
            return model_node(tp, stack)
    homogeneous_tuple = origin is tuple and len(args) == 2 and args[1] is Ellipsis
    if origin in (list, set, frozenset, Sequence) or homogeneous_tuple:
        item = _node(args[0], [], stack) if args else _json(True)
        return Node(pa.list_(pa.field("item", item.type, item.nullable)), False, "list", item=item)
    if origin in (dict, Mapping) and len(args) == 2 and args[1] is not Any:
        key = _node(args[0], [], stack)
        if key.nullable or key.kind != "leaf":
            return _json(False)
        item = _node(args[1], [], stack)
        return Node(pa.map_(key.type, pa.field("value", item.type, item.nullable)), False, "map",
                     item=item, key=key)
    return _json(False)


def _key(name: str, info: FieldInfo) -> str:
    """The key a field has in the JSON the journal holds."""
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return info.alias or name


_models: dict[type[BaseModel], Node] = {}


def model_node(model: type[BaseModel], stack: tuple[type[BaseModel], ...] = ()) -> Node:
    # only roots are cached: a node built under a recursion guard depends on the path to it
    cached = _models.get(model) if not stack else None
    if cached is not None:
        return cached
    fields: list[tuple[str, str, Node]] = []
    for name, info in model.model_fields.items():
        n = _node(info.annotation, list(info.metadata), (*stack, model))
        # nullable: a null in the column is an absent key, or (listed in _nulls) an explicit null
        fields.append((_key(name, info), name,
                       dataclasses.replace(n, nullable=n.nullable or not info.is_required(), null_ok=n.nullable)))
    # Parquet has no empty struct: a model without fields keeps an _extra column too
    extra = model.model_config.get("extra") != "forbid" or not fields
    nulls = any(n.null_ok for _, _, n in fields)  # only then can a key hold an explicit null
    arrow = [pa.field(k, n.type, n.nullable) for k, _, n in fields]
    if nulls:
        arrow.append(pa.field(NULLS, KEYS, True))
    if extra:
        arrow.append(pa.field(EXTRA, JSON_TYPE, True))
    node = Node(pa.struct(arrow), False, "struct", fields=tuple(fields), extra=extra, nulls=nulls)
    if not stack:
        _models[model] = node
    return node


# -- unifying the schemas of several versions ---------------------------------------

def fields_of(t: Any) -> list[Any]:
    return [t.field(i) for i in range(t.num_fields)]


def merge_fields(a: Sequence[Any], b: Sequence[Any], where: str) -> list[Any]:
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
    return internal_last(out)


def internal_last(fields: list[Any]) -> list[Any]:
    """The layout's own columns after the declared ones (and after those newer versions add), in fixed order."""
    return ([f for f in fields if f.name not in INTERNAL]
            + sorted((f for f in fields if f.name in INTERNAL), key=lambda f: INTERNAL.index(f.name)))


def _merge_type(a: Any, b: Any, where: str) -> Any:
    if a.equals(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if {str(a), str(b)} == {str(pa.string()), str(JSON_TYPE)}:
        return JSON_TYPE  # layout 1 kept JSON text as plain strings
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        return pa.struct(merge_fields(fields_of(a), fields_of(b), where))
    if pa.types.is_map(a) and pa.types.is_map(b):
        key = _merge_type(a.key_type, b.key_type, f"{where}.key")
        item = merge_fields([a.item_field], [b.item_field], where)[0]
        return pa.map_(key, item)
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(merge_fields([a.value_field], [b.value_field], where)[0])
    raise ValidationError("?", where, f"column {where!r} is {a} in one version and {b} in another; "
                          "a minor version may only add fields")


# -- arrays ----------------------------------------------------------------------------

def storage(t: Any) -> Any:
    """``t`` with every extension type replaced by its storage type."""
    if isinstance(t, pa.BaseExtensionType):
        return t.storage_type
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(storage(f.type)) for f in fields_of(t)])
    if pa.types.is_map(t):
        return pa.map_(storage(t.key_type), t.item_field.with_type(storage(t.item_type)))
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(storage(t.value_type)))
    return t


def array(values: list[Any], t: Any) -> Any:
    """One Arrow array of type ``t`` from Python values (UUIDs as ``uuid.UUID`` or 16 bytes)."""
    # pyarrow cannot build extension values (arrow.uuid) nested in Python
    # objects: build the storage (16-byte binary) and cast, which is free.
    base = storage(t)
    built = pa.array(values, type=base)
    return built if base.equals(t) else built.cast(t)


def model_type(model: type[BaseModel]) -> Any:
    """The Arrow struct type of a record of ``model``."""
    return model_node(model).type


def model_keys(model: type[BaseModel]) -> frozenset[str]:
    """The JSON keys the fields of ``model`` declare."""
    return frozenset(k for k, _, _ in model_node(model).fields)
