"""Arrow types for pydantic models, and column builders that fill them from decoded JSON.

The format-independent half of the Parquet output: :func:`model_type` derives
a struct type from a model (the mapping is documented in
``recorder.formats.parquet``), :class:`RecordColumn` converts JSON records of
one or more model versions into one Arrow array of their unified type, and
:func:`merge_fields` unifies the schemas of several versions or files.
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

from ._layout import EXTRA, FROM_ENVELOPE, INTERNAL, NULLS

__all__ = ["EXTRA", "FROM_ENVELOPE", "INTERNAL", "JSON_TYPE", "NULLS", "TIMESTAMP", "UUID_TYPE", "Bad",
           "RecordColumn", "array", "fields_of", "merge_fields", "model_keys", "model_type", "to_instant", "to_int",
           "to_str"]

TIMESTAMP = pa.timestamp("us", tz="UTC")
#: The canonical UUID extension type (pyarrow >= 18), else a string.
UUID_TYPE = pa.uuid() if hasattr(pa, "uuid") else pa.string()
#: The canonical JSON extension type (pyarrow >= 19; Parquet's JSON logical type), else a string.
JSON_TYPE = pa.json_() if hasattr(pa, "json_") else pa.string()
_KEYS = pa.list_(pa.string())
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

Conv = Callable[[Any], Any]


class Bad(Exception):
    """A value that cannot take its column's type; ``path`` grows as it unwinds."""

    def __init__(self, reason: str, *path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = list(path)


# -- leaf conversions: JSON value -> what pyarrow takes for the column -----------------

def _lax(target: Any, what: str) -> Conv:
    adapter: TypeAdapter[Any] = TypeAdapter(target)

    def convert(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except Exception as e:  # pydantic's error, or whatever a validator raised
            raise Bad(f"{value!r} is not a valid {what}") from e

    return convert


_lax_int = _lax(int, "integer")
_lax_float = _lax(float, "number")
_lax_bool = _lax(bool, "boolean")
_lax_datetime = _lax(datetime, "datetime")
_lax_date = _lax(date, "date")
_UUID_TYPED = UUID_TYPE != pa.string()


def _json_text(value: Any) -> str:
    # msgspec re-encodes a decoded value to the journal's own compact text
    return msgspec.json.encode(value).decode()


def to_str(value: Any) -> Any:
    """A string as it is; anything else as its JSON text."""
    return value if type(value) is str else _json_text(value)


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
        raise Bad(f"{value!r} is not a UUID") from e
    return u.bytes if _UUID_TYPED else str(u)


# -- the plan of a model: Arrow types and conversions, derived once per model -----------

@dataclass(frozen=True)
class _Node:
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
    fields: tuple[tuple[str, str, _Node], ...] = ()
    extra: bool = False
    nulls: bool = False
    item: _Node | None = None
    key: _Node | None = None
    null_ok: bool = False

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


def _leaf(t: Any, conv: Conv, exact: type | None = None, nullable: bool = False) -> _Node:
    return _Node(t, nullable, conv=conv, exact=exact)


def _json(nullable: bool) -> _Node:
    return _leaf(JSON_TYPE, _json_text, None, nullable)


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
    # only roots are cached: a node built under a recursion guard depends on the path to it
    cached = _models.get(model) if not stack else None
    if cached is not None:
        return cached
    fields: list[tuple[str, str, _Node]] = []
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
        arrow.append(pa.field(NULLS, _KEYS, True))
    if extra:
        arrow.append(pa.field(EXTRA, JSON_TYPE, True))
    node = _Node(pa.struct(arrow), False, "struct", fields=tuple(fields), extra=extra, nulls=nulls)
    if not stack:
        _models[model] = node
    return node


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
        return array(self.values, self.type)


def _mask(mask: list[bool]) -> Any:
    return pa.array(mask, pa.bool_()) if any(mask) else None


class _StructBuilder(_Builder):
    def __init__(self, t: Any) -> None:
        super().__init__(t)
        self.fields = fields_of(t)
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
        arrays = [self.children[f.name].finish() for f in self.fields]
        return pa.StructArray.from_arrays(arrays, fields=self.fields, mask=_mask(self.mask))


class _ListBuilder(_Builder):
    def __init__(self, t: Any) -> None:
        super().__init__(t)
        self.offsets = [0]
        self.mask: list[bool] = []
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


class _Never:
    """A type no JSON value has."""


def _fast(node: _Node, b: _Builder) -> tuple[type, list[Any]]:
    """(exact type, values list) for appending a leaf's already-typed values inline.

    Leaves without an exact type, and other nodes, get a type no value has,
    so the inline test never passes for them.
    """
    if node.kind == "leaf" and node.exact is not None and isinstance(b, _LeafBuilder):
        return node.exact, b.values
    return _Never, []


# The adders below inline the append of already-typed leaf values (most of
# them): a function call per leaf would double the cost of a conversion.

def _keys_adder(b: _Builder | None) -> Callable[[list[str] | None], None]:
    """A function appending one row of a ``_nulls``/``_from_envelope`` column: a list of keys, or null."""
    if b is None:
        return lambda keys: None
    assert isinstance(b, _ListBuilder) and isinstance(b.item, _LeafBuilder)
    offsets, mask, values = b.offsets, b.mask, b.item.values

    def add(keys: list[str] | None) -> None:
        if keys:
            values.extend(keys)
            offsets.append(offsets[-1] + len(keys))
            mask.append(False)
        else:
            offsets.append(offsets[-1])
            mask.append(True)

    return add


def _bind_struct(node: _Node, b: _Builder) -> Callable[..., None]:
    """The adder of a struct: ``add(value, fill=None)``.

    ``fill`` (the record struct only) maps keys the value lacks to the
    values that stand in for them (ids given as metadata); those keys are
    listed in ``_from_envelope``. A key present with JSON null is listed in
    ``_nulls``: an absent key and an explicit null differ.
    """
    assert isinstance(b, _StructBuilder)
    steps = [(key, name, _bind(n, b.children[key]), b.children[key], n.nullable, *_fast(n, b.children[key]))
             for key, name, n in node.fields]
    mine = {key for key, _, _ in node.fields}
    known = frozenset(mine | {name for _, name, _ in node.fields})
    internal = {NULLS} if node.nulls else set()
    if node.extra:
        internal.add(EXTRA)
    absent = [c for k, c in b.children.items() if k not in mine and k not in internal and k != FROM_ENVELOPE]
    extra = b.children[EXTRA].values if node.extra else None  # type: ignore[attr-defined]
    add_nulls = _keys_adder(b.children.get(NULLS) if node.nulls else None)
    add_filled = _keys_adder(b.children.get(FROM_ENVELOPE))
    mask = b.mask

    def add(value: Any, fill: dict[str, Any] | None = None) -> None:
        if not isinstance(value, dict):
            raise Bad(f"expected an object, got {type(value).__name__}")
        explicit: list[str] | None = None
        filled: list[str] | None = None
        for key, name, add_child, child, nullable, exact, values in steps:
            v = value.get(key)
            if v is None and name != key:
                v = value.get(name)  # populate_by_name: the field under its own name
            if type(v) is exact:
                values.append(v)
                continue
            if v is None:
                present = key in value or (name != key and name in value)
                if present:  # explicit null: kept apart from an absent key
                    if not node.nulls:
                        raise Bad("null, but the model's type does not admit null", f".{key}")
                    explicit = [key] if explicit is None else [*explicit, key]
                if fill is not None and key in fill:
                    v = fill[key]  # a metadata id validation used in its place
                    filled = [key] if filled is None else [*filled, key]
                elif not nullable:
                    raise Bad("null, but the model requires a value" if present
                              else "missing, but the model requires it", f".{key}")
                else:
                    child.null()
                    continue
                if type(v) is exact:
                    values.append(v)
                    continue
            try:
                add_child(v)
            except Bad as e:
                e.path.insert(0, f".{key}")
                raise
        for child in absent:
            child.null()
        if node.nulls:
            add_nulls(explicit)
        add_filled(filled)
        if extra is not None:
            extra.append(None if known.issuperset(value) else
                         _json_text({k: v for k, v in value.items() if k not in known}))
        mask.append(False)

    return add


def _bind_list(node: _Node, b: _Builder) -> _Add:
    assert isinstance(b, _ListBuilder) and node.item is not None
    item, add_item, nullable = b.item, _bind(node.item, b.item), node.item.nullable
    exact, values = _fast(node.item, b.item)
    offsets, mask = b.offsets, b.mask

    def add_null() -> None:
        if not nullable:
            raise Bad("null, but the model does not allow it")
        item.null()

    if node.kind == "list":
        def add(value: Any) -> None:
            if not isinstance(value, list):
                raise Bad(f"expected an array, got {type(value).__name__}")
            for i, v in enumerate(value):
                if type(v) is exact:
                    values.append(v)
                    continue
                try:
                    if v is not None:
                        add_item(v)
                    else:
                        add_null()
                except Bad as e:
                    e.path.insert(0, f"[{i}]")
                    raise
            offsets.append(offsets[-1] + len(value))
            mask.append(False)

        return add

    assert isinstance(b, _MapBuilder) and node.key is not None
    add_key = _bind(node.key, b.key)
    key_exact, keys = _fast(node.key, b.key)

    def add_map(value: Any) -> None:
        if not isinstance(value, dict):
            raise Bad(f"expected an object, got {type(value).__name__}")
        for k, v in value.items():
            try:
                if type(k) is key_exact:
                    keys.append(k)
                else:
                    add_key(k)
                if type(v) is exact:
                    values.append(v)
                elif v is not None:
                    add_item(v)
                else:
                    add_null()
            except Bad as e:
                e.path.insert(0, f"[{k!r}]")
                raise
        offsets.append(offsets[-1] + len(value))
        mask.append(False)

    return add_map


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
    return _internal_last(out)


def _internal_last(fields: list[Any]) -> list[Any]:
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
    raise ValueError(f"column {where!r} is {a} in one version and {b} in another; "
                     "a minor version may only add fields")


# -- arrays ----------------------------------------------------------------------------

def _storage(t: Any) -> Any:
    """``t`` with every extension type replaced by its storage type."""
    if isinstance(t, pa.BaseExtensionType):
        return t.storage_type
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_storage(f.type)) for f in fields_of(t)])
    if pa.types.is_map(t):
        return pa.map_(_storage(t.key_type), t.item_field.with_type(_storage(t.item_type)))
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_storage(t.value_type)))
    return t


def array(values: list[Any], t: Any) -> Any:
    # pyarrow cannot build extension values (arrow.uuid) nested in Python
    # objects: build the storage (16-byte binary) and cast, which is free.
    storage = _storage(t)
    array = pa.array(values, type=storage)
    return array if storage.equals(t) else array.cast(t)


# -- the record column ------------------------------------------------------------------

def model_type(model: type[BaseModel]) -> Any:
    """The Arrow struct type of a record of ``model``."""
    return _model_node(model).type


def model_keys(model: type[BaseModel]) -> frozenset[str]:
    """The JSON keys the fields of ``model`` declare."""
    return frozenset(k for k, _, _ in _model_node(model).fields)


class RecordColumn:
    """Records of one or more versions of a model, converted into one struct column.

    The column's type is the union of the versions' struct types (oldest
    first, so columns a newer version adds come last); each record is
    converted as its own version's model sees it. With ``envelope_keys``,
    a model that declares any of them gets a ``_from_envelope`` column.

    Raises:
        ValueError: two versions give one column different types.
    """

    def __init__(self, models: Sequence[type[BaseModel]], envelope_keys: Iterable[str] = ()) -> None:
        fields = fields_of(model_type(models[0]))
        for m in models[1:]:
            fields = merge_fields(fields, fields_of(model_type(m)), "")
        wanted = frozenset(envelope_keys)
        if any(model_keys(m) & wanted for m in models):
            fields = _internal_last([*fields, pa.field(FROM_ENVELOPE, _KEYS, True)])
        self.type = pa.struct(fields)
        self._builder = _StructBuilder(self.type)
        self._adders: dict[type[BaseModel], Callable[..., None]] = {}

    def append(self, model: type[BaseModel], record: Any, fill: dict[str, Any] | None = None) -> None:
        """Append one decoded JSON record of ``model``.

        Args:
            model: the model of the record's version.
            record: the decoded record.
            fill: values that stand in for keys the record lacks (ids its
                producer gave as metadata), listed in ``_from_envelope``.

        Raises:
            Bad: a value cannot take its column's type (the column is then
                left half appended: discard it).
        """
        add = self._adders.get(model)
        if add is None:
            add = self._adders[model] = _bind_struct(_model_node(model), self._builder)
        add(record, fill)

    def finish(self) -> Any:
        """The column as one Arrow struct array."""
        return self._builder.finish()
