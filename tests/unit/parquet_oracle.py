"""The value-by-value Parquet conversion that bulk conversion replaced, kept as the test oracle.

This is ``recorder/storage/formats/_arrow.py``'s column builders and ``parquet.to_table``
as they were before the bulk path (commit 3ff4afd), unchanged but for imports:
``test_parquet_bulk.py`` checks that the bulk path gives the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from recorder.exceptions import ConversionError as Bad
from recorder.exceptions import ValidationError
from recorder.storage.formats._arrow import (
    EXTRA,
    FROM_ENVELOPE,
    KEYS as _KEYS,
    NULLS,
    TIMESTAMP,
    Conv,
    Node as _Node,
    array,
    fields_of,
    internal_last as _internal_last,
    json_text as _json_text,
    merge_fields,
    model_keys,
    model_node as _model_node,
    model_type,
    to_instant,
    to_int,
    to_str,
)
from recorder.storage.formats.parquet import _FROM_ENVELOPE, _envelope_fields, _metadata, _version_key

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


# -- the old parquet.to_table ---------------------------------------------------------

def _maybe_instant(value: Any) -> int | None:
    # The envelope timestamp is whatever the record called "timestamp": a model
    # whose timestamp is not a time keeps it in the record column only.
    try:
        return to_instant(value)
    except (Bad, ValueError, TypeError, OverflowError):
        return None


def _to_tags(value: Any) -> Any:
    if not isinstance(value, dict):
        raise Bad(f"expected an object, got {type(value).__name__}")
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



def old_to_table(envelopes: Iterable[dict[str, Any]],
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
    models: dict[str, type[BaseModel]] = {}
    for env in lines:
        version = str(env.get("schema_version"))
        if version not in models:
            models[version] = model_for(version)
    versions = sorted(models, key=_version_key)
    try:
        records = RecordColumn([models[v] for v in versions], _FROM_ENVELOPE)
    except ValueError as e:
        raise ValidationError(schema_type, "$", str(e)) from e
    keys = {v: model_keys(m) for v, m in models.items()}
    columns: list[list[Any]] = [[] for _ in _ENVELOPE]
    for env in lines:
        try:
            if env.get("schema_type") != schema_type:
                raise Bad(f"is {env.get('schema_type')!r}, not {schema_type!r}: one file holds one type",
                          "schema_type")
            for i, (name, _, nullable, conv) in enumerate(_ENVELOPE):
                v = env.get(name)
                if v is None:
                    if not nullable:
                        raise Bad("missing from the envelope", name)
                    columns[i].append(None)
                    continue
                try:
                    columns[i].append(conv(v))
                except Bad as e:
                    e.path.insert(0, name)
                    raise
            version = str(env["schema_version"])
            record = env.get("record")
            fill = None
            if isinstance(record, dict):
                missing = [k for k in _FROM_ENVELOPE
                           if k in keys[version] and record.get(k) is None and env.get(k) is not None]
                if missing:  # given as metadata beside the record: validation used these
                    fill = {k: env[k] for k in missing}
            elif record is None:
                raise Bad("missing from the envelope", "record")
            try:
                records.append(models[version], record, fill)
            except Bad as e:
                e.path.insert(0, "record")
                raise
        except Bad as e:
            # the columns are half appended now: they are dropped, never made a table
            raise ValidationError(schema_type, "".join(e.path) or "$",
                                  f"line seq {env.get('seq')}: {e.reason}") from e
    schema = pa.schema([*_envelope_fields(), pa.field("record", records.type, False)],
                       metadata=_metadata(schema_type, versions))
    arrays = [array(col, f.type) for col, f in zip(columns, schema)]
    arrays.append(records.finish())
    return pa.Table.from_arrays(arrays, schema=schema)
