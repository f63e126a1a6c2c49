"""Journal lines of one schema type to Arrow arrays in bulk: one typed decode per line, one pyarrow call per column.

pyarrow builds nested structs, lists and maps from Python objects itself, so
the conversion hands it values of the right Python types and nothing more.
Each line is decoded once with a msgspec type derived from the layout (the
kind of typed decode the accept step uses, ``recorder.schema.fast``): times
come out as ``datetime``, UUIDs as ``uuid.UUID``, dates as ``date``, and a
value of any other type than its column's fails the decode. Python then
touches only what the layout adds (``_nulls``, ``_from_envelope``,
``_extra``, JSON text), never a record's plain values (the landmarks of a
``raw_action``).

A line the typed decode refuses is decoded plainly and shaped value by
value with the leaf conversions of ``recorder.storage.formats._arrow`` (pydantic's
lax rules), which also name the field of a value that cannot be converted:
lax values pydantic accepted (``"3"`` for an int, an epoch number for a
time), a time with more than six fraction digits (msgspec rounds it, the
layout cuts it, as pydantic does), a null where the type admits none. A
model that keeps extra fields, or has aliases, is shaped value by value
below the line's typed envelope (a typed decode would drop what it does not
declare). Either way pyarrow gets the same values, and the table is the
same (``tests/unit/test_parquet_bulk.py`` compares it with the former
value-by-value builders for every shipped type).
"""

from __future__ import annotations

import gc
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, NotRequired, Required, TypedDict

import msgspec
import pyarrow as pa

from ...exceptions import ConversionError
from ._arrow import (
    EXTRA,
    FROM_ENVELOPE,
    JSON_TYPE,
    NULLS,
    TIMESTAMP,
    UUID_TYPE,
    Node,
    json_text,
    model_node,
)

__all__ = ["Shaper", "no_gc", "shaper"]

Shape = Callable[[Any], Any]
# A time with more than six fraction digits: msgspec rounds it to the microsecond, the layout cuts it.
_FINE_TIME = re.compile(rb":[0-5][0-9][.,][0-9]{7}")
_UUID_TYPED = UUID_TYPE != pa.string()


class _Plain(Exception):
    """The typed decode let through something only the value-by-value rules decide: shape the line plainly."""


@contextmanager
def no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a segment's objects are made (they are all live until the end).

    Without it the collector walks the growing heap again and again: about
    half the time of a decode of a 10k-record segment. The collector is
    process-wide: other threads go without it for as long (a fraction of a
    second); reference counting still frees everything acyclic.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# -- value by value: the rules every value must satisfy, for plainly decoded JSON -------------

def _full(node: Node) -> Shape:
    """The value-by-value shape of a non-null JSON value of ``node`` (raises ConversionError with its path)."""
    if node.kind == "struct":
        return _full_struct(node)
    if node.kind == "list":
        return _full_list(node)
    if node.kind == "map":
        return _full_map(node)
    conv, exact = node.conv, node.exact
    assert conv is not None
    if exact is None:
        return conv
    return lambda v: v if type(v) is exact else conv(v)


def _full_struct(node: Node) -> Callable[..., dict[str, Any]]:
    steps = [(key, name, _full(n), n.nullable) for key, name, n in node.fields]
    known = frozenset({k for k, _, _ in node.fields} | {name for _, name, _ in node.fields})

    def shape(value: Any, fill: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConversionError(f"expected an object, got {type(value).__name__}")
        out: dict[str, Any] = {}
        explicit: list[str] = []
        filled: list[str] = []
        for key, name, conv, nullable in steps:
            v = value.get(key)
            if v is None and name != key:
                v = value.get(name)  # populate_by_name: the field under its own name
            if v is None:
                present = key in value or (name != key and name in value)
                if present:  # explicit null: kept apart from an absent key
                    if not node.nulls:
                        raise ConversionError("null, but the model's type does not admit null", f".{key}")
                    explicit.append(key)
                if fill is not None and key in fill:
                    v = fill[key]  # a metadata id validation used in its place
                    filled.append(key)
                elif not nullable:
                    raise ConversionError("null, but the model requires a value" if present
                                          else "missing, but the model requires it", f".{key}")
                else:
                    continue
            try:
                out[key] = conv(v)
            except ConversionError as e:
                e.path.insert(0, f".{key}")
                raise
        if explicit:
            out[NULLS] = explicit
        if filled:
            out[FROM_ENVELOPE] = filled
        if node.extra and not known.issuperset(value):
            out[EXTRA] = json_text({k: v for k, v in value.items() if k not in known})
        return out

    return shape


def _full_list(node: Node) -> Shape:
    assert node.item is not None
    conv, nullable = _full(node.item), node.item.nullable

    def shape(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ConversionError(f"expected an array, got {type(value).__name__}")
        out = []
        for i, v in enumerate(value):
            try:
                if v is not None:
                    out.append(conv(v))
                elif nullable:
                    out.append(None)
                else:
                    raise ConversionError("null, but the model does not allow it")
            except ConversionError as e:
                e.path.insert(0, f"[{i}]")
                raise
        return out

    return shape


def _full_map(node: Node) -> Shape:
    assert node.item is not None and node.key is not None
    key, conv, nullable = _full(node.key), _full(node.item), node.item.nullable

    def shape(value: Any) -> list[tuple[Any, Any]]:
        if not isinstance(value, dict):
            raise ConversionError(f"expected an object, got {type(value).__name__}")
        out = []  # pairs, not a dict: two keys may convert to one (map entries keep both)
        for k, v in value.items():
            try:
                if v is None and not nullable:
                    raise ConversionError("null, but the model does not allow it")
                out.append((key(k), None if v is None else conv(v)))
            except ConversionError as e:
                e.path.insert(0, f"[{k!r}]")
                raise
        return out

    return shape


# -- typed: what msgspec decodes to the right Python types, and the little left to do ----------

def _typed(node: Node) -> tuple[Any, Shape | None]:
    """(msgspec type of the non-null JSON values of ``node``, shape of a decoded value or None: as it is)."""
    if node.kind == "leaf":
        t = node.type
        if t.equals(TIMESTAMP):
            return datetime, None
        if t.equals(pa.date32()):
            return date, None
        if t.equals(UUID_TYPE) and _UUID_TYPED:
            return uuid.UUID, None
        if node.conv is json_text:
            return Any, json_text
        if node.exact in (str, int, float, bool):
            return node.exact, None
        return Any, _full(node)  # a UUID as text (pyarrow < 18), and anything the table above misses
    if node.kind == "struct":
        if node.extra or any(key != name for key, name, _ in node.fields):
            return dict[str, Any], _full_struct(node)
        return _typed_struct(node, frozenset())
    assert node.item is not None
    item, shape = _typed(node.item)
    if node.item.nullable:
        item = item | None
    if node.kind == "list":
        return list[item], (None if shape is None else  # type: ignore[valid-type]
                            (lambda v: [None if x is None else shape(x) for x in v]))
    assert node.key is not None
    key, key_shape = _typed(node.key)
    if key_shape is not None:
        return dict[str, Any], _full_map(node)
    return dict[key, item], (None if shape is None else  # type: ignore[valid-type]
                             (lambda v: {k: None if x is None else shape(x) for k, x in v.items()}))


def _typed_struct(node: Node, ids: frozenset[str]) -> tuple[Any, Shape | None]:
    """A TypedDict of the struct's fields; ``ids`` (the record's metadata ids) may be absent whatever the model says."""
    annotations: dict[str, Any] = {}
    shapes: list[tuple[str, Shape]] = []
    none_keys: list[str] = []  # keys whose decoded value may be null: an explicit null to list in _nulls
    for key, _name, n in node.fields:
        t, shape = _typed(n)
        if n.null_ok:
            t = t | None
        if n.null_ok or t is Any:
            none_keys.append(key)
        annotations[key] = NotRequired[t] if n.nullable or key in ids else Required[t]
        if shape is not None:
            shapes.append((key, shape))
    td = TypedDict(f"_Typed_{abs(hash(node.type))}", annotations)  # type: ignore[misc]
    null_ok = frozenset(k for k, _, n in node.fields if n.null_ok and node.nulls)
    if not shapes and not none_keys:
        return td, None

    def shape_struct(d: dict[str, Any]) -> dict[str, Any]:
        for key, sh in shapes:
            v = d.get(key)
            if v is not None:
                d[key] = sh(v)
        nulls = None
        for key in none_keys:
            if key in d and d[key] is None:
                if key not in null_ok:
                    raise _Plain  # a null the model's type does not admit: the value-by-value rules say what
                nulls = [key] if nulls is None else [*nulls, key]
        if nulls:
            d[NULLS] = nulls
        return d

    return td, shape_struct


# -- the envelope --------------------------------------------------------------------------

class _Envelope(msgspec.Struct):
    """A record line's envelope, typed as its columns take it; the record stays bytes until its version is known."""

    seq: int
    received: datetime
    schema_type: str
    schema_version: str
    record_id: str
    user_id: str
    producer: str
    pseq: int
    record: msgspec.Raw
    timestamp: datetime | None = None
    session_id: str | None = None
    source: str | None = None
    action_id: str | None = None
    tags: dict[str, str] | None = None


_envelope = msgspec.json.Decoder(_Envelope)


class Shaper:
    """The records of one model version: typed decode and shape, or value by value.

    Args:
        model: the version's model.
        ids: record fields the envelope may stand in for (``_from_envelope``).
    """

    def __init__(self, model: type[Any], ids: Sequence[str]) -> None:
        node = model_node(model)
        self.keys = frozenset(k for k, _, _ in node.fields)
        self.ids = tuple(k for k in ids if k in self.keys)
        self.required = frozenset(k for k, _, n in node.fields if k in self.ids and not n.nullable)
        self.full = _full_struct(node)
        self.id_shapes = {k: _full(n) for k, _, n in node.fields if k in self.ids}
        if node.extra or any(key != name for key, name, _ in node.fields):
            self.decoder: msgspec.json.Decoder[Any] | None = None  # shaped value by value below the envelope
            self.shape: Shape | None = None
        else:
            td, self.shape = _typed_struct(node, frozenset(self.ids))
            self.decoder = msgspec.json.Decoder(td)

    def fill(self, record: Any, env: Any) -> dict[str, Any] | None:
        """The metadata ids that stand in for keys ``record`` lacks or holds as null (as validation did)."""
        if not isinstance(record, dict):
            return None
        missing = {k: env[k] for k in self.ids if record.get(k) is None and env.get(k) is not None}
        return missing or None

    def typed(self, env: _Envelope) -> dict[str, Any]:
        """The record of a typed envelope, shaped (raises msgspec errors or _Plain: shape the line plainly)."""
        if self.decoder is None:
            record = msgspec.json.decode(env.record)
            return self.full(record, self.fill(record, {k: getattr(env, k) for k in self.ids}))
        d: dict[str, Any] = self.decoder.decode(env.record)
        if self.shape is not None:
            d = self.shape(d)
        missing = [k for k in self.ids if d.get(k) is None and getattr(env, k) is not None]
        for k in missing:
            d[k] = self.id_shapes[k](getattr(env, k))
        if missing:
            d[FROM_ENVELOPE] = missing
        if any(d.get(k) is None for k in self.required):
            raise _Plain
        return d


def shaper(model: type[Any], ids: Sequence[str]) -> Shaper:
    """The (cached) shaper of a model version's records."""
    key = (model, tuple(ids))
    found = _shapers.get(key)
    if found is None:
        found = _shapers[key] = Shaper(model, ids)
    return found


_shapers: dict[tuple[type[Any], tuple[str, ...]], Shaper] = {}


def typed_envelope(line: bytes) -> _Envelope | None:
    """The line's envelope, typed; None when a value of it (or a fine-grained time anywhere) needs the plain path."""
    if _FINE_TIME.search(line):
        return None
    try:
        return _envelope.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def envelope_row(env: _Envelope) -> tuple[Any, ...]:
    """The envelope columns of a typed line, in layout order."""
    return (env.seq, env.received, env.schema_type, env.schema_version, env.record_id, env.timestamp, env.user_id,
            env.session_id, env.source, env.action_id, env.tags, env.producer, env.pseq)


def plain(e: Exception) -> bool:
    """True if ``e``, raised by a typed decode or shape, means: take the line through the plain path
    (which also reports a value that cannot be converted, naming its line and field)."""
    return isinstance(e, (_Plain, ConversionError, msgspec.DecodeError, msgspec.ValidationError))

