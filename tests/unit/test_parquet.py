"""Parquet format: schema from the models, journal -> table -> file equality, evolution, crash safety."""

from __future__ import annotations

import enum
import errno
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from unit_support import corpus_bytes

from recorder import Store, _durable, a3cp
from recorder.exceptions import DurabilityError, StorageFull, ValidationError
from recorder.formats import parquet
from recorder.formats.parquet import EXTRA, FROM_ENVELOPE, INTERNAL, JSON_TYPE, NULLS
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp

UUID_TYPE = pa.uuid() if hasattr(pa, "uuid") else pa.string()
TS = pa.timestamp("us", tz="UTC")
EXAMPLE_MODELS = [a3cp.A3CPMessage, a3cp.A3CPMessageV1_1, a3cp.RawActionRecord, a3cp.AuditEvent,
                  a3cp.FeedbackLogEntry, a3cp.A3CPBase]
#: columns of the example models that hold JSON text (by name, for a pyarrow without the JSON type)
JSON_COLUMNS = {"annotation", EXTRA}


def is_json(t: Any, name: str) -> bool:
    return (t == JSON_TYPE and JSON_TYPE != pa.string()) or name in JSON_COLUMNS


# -- helpers -----------------------------------------------------------------------------

@pytest.fixture
def dir_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture
def no_fault_hook() -> Iterator[None]:
    yield
    _durable.set_fault_hook(None)


def journal_envelopes(root: str | Path, schema_type: str) -> list[dict[str, Any]]:
    """The record lines of every journal of ``schema_type`` under ``root``, decoded as the sealer does."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(root).rglob("*.jsonl")):
        if "_recorder" in path.parts:
            continue
        lines = [msgspec.json.decode(ln) for ln in path.read_bytes().splitlines()]
        if lines and lines[0].get("schema_type") == schema_type:
            out.extend(ln for ln in lines if "recorder_journal" not in ln)
    return sorted(out, key=lambda e: e["seq"])


def envelope(record: dict[str, Any], seq: int, schema_type: str = "a3cp_message", **extra: Any) -> dict[str, Any]:
    """A record line as the writer builds it (chain fields included, which Parquet ignores)."""
    return {"seq": seq, "received": f"2026-01-01T00:00:{seq % 60:02d}.000001Z", "schema_type": schema_type,
            "schema_version": record.get("schema_version", "1.0.0"),
            "record_id": record.get("record_id") or str(uuid.UUID(int=seq)),
            "timestamp": record.get("timestamp"), "user_id": record.get("user_id", "elias01"),
            "session_id": record.get("session_id"), "source": record.get("source"), "action_id": None,
            "tags": None, "producer": "p1", "pseq": seq, "record": record, "prev": "0" * 64, "h": "f" * 64,
            **extra}


def models_of(mapping: dict[str, type[BaseModel]]) -> Callable[[str], type[BaseModel]]:
    """A ``model_for`` that picks by MAJOR.MINOR prefix."""
    return lambda version: mapping[".".join(version.split(".")[:2])]


A3CP_MODELS = models_of({"1.0": a3cp.A3CPMessage, "1.1": a3cp.A3CPMessageV1_1})


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def canon_journal(value: Any, t: Any, name: str = "") -> Any:
    """A journal JSON value in comparable form, guided only by the column type: absent and null stay apart."""
    if value is None:
        return None
    if is_json(t, name):
        return value
    if pa.types.is_struct(t):
        names = {t.field(i).name for i in range(t.num_fields)}
        out: dict[str, Any] = {}
        for i in range(t.num_fields):
            f = t.field(i)
            if f.name not in INTERNAL and f.name in value:
                out[f.name] = canon_journal(value[f.name], f.type, f.name)
        if EXTRA in names:  # undeclared keys, including one that happens to be called "_extra"
            out.update({k: v for k, v in value.items() if k not in names - set(INTERNAL)})
        return out
    if pa.types.is_map(t):
        return {k: canon_journal(v, t.item_type) for k, v in value.items()}
    if pa.types.is_list(t):
        return [canon_journal(v, t.value_type) for v in value]
    if t == TS:
        return instant(value)
    if t == UUID_TYPE and UUID_TYPE != pa.string():
        return uuid.UUID(value)
    return value


def canon_parquet(value: Any, t: Any, name: str = "") -> Any:
    """A value read back with pyarrow in the same comparable form: a null is a key only if ``_nulls`` names it."""
    if value is None:
        return None
    if is_json(t, name):
        return json.loads(value)
    if pa.types.is_struct(t):
        nulls = value.get(NULLS) or []
        out: dict[str, Any] = {}
        for i in range(t.num_fields):
            f = t.field(i)
            if f.name == EXTRA:
                out.update(json.loads(value[EXTRA]) if value[EXTRA] is not None else {})
            elif f.name in INTERNAL:
                continue
            elif (x := canon_parquet(value[f.name], f.type, f.name)) is not None or f.name in nulls:
                out[f.name] = x
        return out
    if pa.types.is_map(t):
        return {k: canon_parquet(v, t.item_type) for k, v in value}
    if pa.types.is_list(t):
        return [canon_parquet(v, t.value_type) for v in value]
    return value


def from_envelope(env: dict[str, Any], model: type[BaseModel]) -> list[str]:
    """The record fields the producer passed only beside the record (validation used those)."""
    return [k for k in ("record_id", "schema_version", "user_id", "session_id")
            if env["record"].get(k) is None and env.get(k) is not None and k in model.model_fields]


def expected_record(env: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The journal's record plus the ids a producer passed beside it (which validation used too)."""
    return {**env["record"], **{k: env[k] for k in from_envelope(env, model)}}


def assert_file_equals_journal(path: Path, envs: list[dict[str, Any]],
                               model_for: Callable[[str], type[BaseModel]]) -> None:
    """Every envelope value and every record value read back from ``path`` equals the journal's."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    assert len(rows) == len(envs)
    record_type = table.schema.field("record").type
    for row, env in zip(rows, envs):
        for key in ("seq", "schema_type", "schema_version", "record_id", "user_id", "session_id", "source",
                    "action_id", "producer", "pseq"):
            assert row[key] == env.get(key), key
        assert row["received"] == instant(env["received"])
        assert row["timestamp"] == (instant(env["timestamp"]) if env.get("timestamp") else None)
        assert (dict(row["tags"]) if row["tags"] is not None else None) == env.get("tags")
        model = model_for(env["schema_version"])
        assert canon_parquet(row["record"], record_type) == canon_journal(expected_record(env, model), record_type)
        assert (row["record"].get(FROM_ENVELOPE) or []) == from_envelope(env, model)


def types_in(t: Any) -> Iterator[Any]:
    """``t`` and every type nested in it."""
    yield t
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            yield from types_in(t.field(i).type)
    elif pa.types.is_map(t):
        yield from types_in(t.key_type)
        yield from types_in(t.item_type)
    elif pa.types.is_list(t):
        yield from types_in(t.value_type)


# -- schema ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", EXAMPLE_MODELS, ids=lambda m: m.__name__)
def test_every_example_model_gets_typed_columns(model: type[BaseModel]) -> None:
    """Each shipped model maps to typed columns: UUID, UTC timestamps, and never a struct for a dict field."""
    schema = parquet.arrow_schema(model)
    assert schema.field("record_id").type == UUID_TYPE
    assert schema.field("timestamp").type == TS
    assert not schema.field("record_id").nullable and schema.field("session_id").nullable
    for name, info in model.model_fields.items():
        if "dict[" in str(info.annotation):
            assert not pa.types.is_struct(schema.field(name).type), name
    forbids = model.model_config.get("extra") == "forbid"
    assert (EXTRA in schema.names) is not forbids
    assert schema.names[: len(model.model_fields)] == list(model.model_fields)


def test_dicts_are_maps_and_nested_models_are_structs() -> None:
    """classifier_output and landmark maps are map<> columns; raw_features_ref and frames hold structs."""
    msg = parquet.arrow_schema(a3cp.A3CPMessage)
    assert msg.field("classifier_output").type == pa.map_(pa.string(), pa.field("value", pa.float64(), False))
    ref = msg.field("raw_features_ref").type
    assert pa.types.is_struct(ref) and ref.field("shape").type == pa.list_(pa.field("item", pa.int64(), False))
    assert msg.field("annotation").type == JSON_TYPE  # dict[str, Any]: JSON text
    assert msg.field("capture_id").type == UUID_TYPE
    frames = parquet.arrow_schema(a3cp.RawActionRecord).field("frames").type
    frame = frames.value_type
    assert pa.types.is_list(frames) and pa.types.is_struct(frame)
    landmarks = frame.field("landmarks").type
    assert pa.types.is_map(landmarks) and pa.types.is_map(landmarks.item_type)
    point = landmarks.item_type.item_type
    assert pa.types.is_struct(point) and [point.field(i).name for i in range(4)] == ["x", "y", "z", "visibility"]
    assert not point.field("x").nullable and point.field("z").nullable  # z has a default: may be absent
    assert frame.field("timestamp").type == TS and frame.field("timestamp").nullable


def test_envelope_schema_puts_the_envelope_first_and_the_record_in_one_struct() -> None:
    """The envelope columns come first in writer order, then ``record`` as a struct of the record schema."""
    schema = parquet.envelope_schema(a3cp.A3CPMessage)
    assert schema.names == ["seq", "received", "schema_type", "schema_version", "record_id", "timestamp",
                            "user_id", "session_id", "source", "action_id", "tags", "producer", "pseq", "record"]
    assert schema.field("seq").type == pa.int64() and schema.field("received").type == TS
    assert schema.field("timestamp").type == TS and schema.field("timestamp").nullable
    assert schema.field("tags").type == pa.map_(pa.string(), pa.string())
    record = schema.field("record").type
    assert pa.schema([record.field(i) for i in range(record.num_fields)]) == parquet.arrow_schema(a3cp.A3CPMessage)


class Colour(enum.Enum):
    RED = "red"


class Node(BaseModel):
    name: str
    children: list[Node] = []


class Kitchen(BaseModel):
    """A model using the less common annotations."""

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["a", "b"]
    colour: Colour
    any_value: Any = None
    free: dict[str, Any] = {}
    number: int | float = 0
    either: int | str = 0
    maybe_ids: list[uuid.UUID | None] = []
    counts: dict[str, list[int]] = {}
    aliased: Annotated[str, Field(alias="AliasedKey")] = ""
    loose: Annotated[str, Field(pattern=r"[0-9a-f-]+")] = ""
    tree: Node | None = None
    flag: bool = False
    when: datetime | None = None


def test_less_common_annotations_map_as_documented() -> None:
    """Literal and enums are strings, Any and dict[str, Any] JSON, int|float a double, aliases name columns."""
    s = parquet.arrow_schema(Kitchen)
    assert s.field("kind").type == pa.string() and s.field("colour").type == pa.string()
    assert s.field("any_value").type == JSON_TYPE and s.field("free").type == JSON_TYPE
    assert s.field("number").type == pa.float64()
    assert s.field("either").type == JSON_TYPE  # a mixed union: JSON text
    assert s.field("maybe_ids").type == pa.list_(pa.field("item", UUID_TYPE, True))
    assert s.field("counts").type == pa.map_(pa.string(), pa.field("value", pa.list_(
        pa.field("item", pa.int64(), False)), False))
    assert "AliasedKey" in s.names and "aliased" not in s.names
    assert s.field("loose").type == pa.string()  # a pattern that accepts non-UUIDs stays a string
    tree = s.field("tree").type
    assert pa.types.is_struct(tree) and tree.field("children").type.value_type == JSON_TYPE  # recursion: JSON
    assert EXTRA in s.names  # extra="ignore" (the default): whatever the journal holds is kept


def test_less_common_annotations_convert_values() -> None:
    """Values of those annotations arrive converted: enums as their value, JSON text, aliases, recursion."""
    rec = {"kind": "a", "colour": "red", "any_value": [1, {"x": None}], "free": {"k": [1, 2]}, "number": 3,
           "either": "x", "maybe_ids": [str(uuid.UUID(int=5)), None], "counts": {"a": [1, 2]},
           "AliasedKey": "v", "tree": {"name": "root", "children": [{"name": "leaf"}]}, "flag": True,
           "when": "2026-01-01T00:00:00+02:00", "stray": 1}
    t = parquet.to_table([envelope(rec, 1, "kitchen", schema_version="1.0.0")], lambda v: Kitchen)
    row = t.column("record").to_pylist()[0]
    assert row["kind"] == "a" and row["colour"] == "red"
    assert json.loads(row["any_value"]) == [1, {"x": None}] and json.loads(row["free"]) == {"k": [1, 2]}
    assert row["number"] == 3.0 and json.loads(row["either"]) == "x"
    want_id = uuid.UUID(int=5) if UUID_TYPE != pa.string() else str(uuid.UUID(int=5))
    assert row["maybe_ids"] == [want_id, None]
    assert row["counts"] == [("a", [1, 2])] and row["AliasedKey"] == "v"
    assert json.loads(row["tree"]["children"][0]) == {"name": "leaf"}
    assert row["when"] == datetime(2025, 12, 31, 22, tzinfo=timezone.utc)
    assert json.loads(row[EXTRA]) == {"stray": 1}


class Lax(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int
    x: float
    ok: bool
    at: datetime


def test_lax_values_the_model_accepted_are_converted_as_pydantic_does() -> None:
    """A journal keeps what the producer sent: "3" for an int, 1 for a bool, epoch seconds for a datetime."""
    raw = {"n": "3", "x": "1.5", "ok": "yes", "at": 1_700_000_000}
    parsed = Lax.model_validate(raw)
    t = parquet.to_table([envelope(raw, 1, "lax")], lambda v: Lax)
    assert t.column("record").to_pylist()[0] == parsed.model_dump()


def test_a_value_that_cannot_be_converted_names_the_line_and_the_field() -> None:
    """A value outside its column's type raises ValidationError with the line's seq and the field path."""
    bad = sample_message(i=1)
    bad["classifier_output"]["hungry"] = "lots"
    with pytest.raises(ValidationError) as info:
        parquet.to_table([envelope(sample_message(i=0), 1), envelope(bad, 2)], A3CP_MODELS)
    assert info.value.field == "record.classifier_output['hungry']"
    assert "line seq 2" in info.value.reason and info.value.schema_type == "a3cp_message"


def test_a_required_field_missing_from_a_line_is_refused() -> None:
    """A null where the model requires a value is refused rather than written as a null."""
    rec = sample_message(i=0)
    del rec["capture_id"]
    with pytest.raises(ValidationError) as info:
        parquet.to_table([envelope(rec, 7)], A3CP_MODELS)
    assert info.value.field == "record.capture_id" and "line seq 7" in info.value.reason


@pytest.mark.parametrize("field,value,path", [
    ("raw_features_ref", {"uri": "u", "hash": "sha256:0", "encoding": "e", "shape": [42, None], "dtype": "f",
                          "format": "npz"}, "record.raw_features_ref.shape[1]"),
    ("classifier_output", {"unknown": None}, "record.classifier_output['unknown']"),
])
def test_a_null_item_the_model_does_not_allow_is_refused(field: str, value: Any, path: str) -> None:
    """A null inside a list or map whose items may not be null is refused, naming the index or key."""
    rec = dict(sample_message(i=0), **{field: value})
    with pytest.raises(ValidationError) as info:
        parquet.to_table([envelope(rec, 3)], A3CP_MODELS)
    assert info.value.field == path and "line seq 3" in info.value.reason


def test_an_explicit_null_the_layout_cannot_keep_is_refused_not_turned_into_an_absent_key() -> None:
    """A null in a struct with no ``_nulls`` column (its model's types all exclude None) refuses the conversion,
    naming the field, instead of reading back as an absent key."""
    frame = {"frame_index": 0, "landmarks": {"hand": {"tip": {"x": 0.1, "y": 0.2, "z": None}}}}
    rec = dict(sample_raw_action(i=0, frames=1), frames=[frame])
    with pytest.raises(ValidationError) as info:
        parquet.to_table([envelope(rec, 4, "raw_action")], lambda v: a3cp.RawActionRecord)
    assert info.value.field == "record.frames[0].landmarks['hand']['tip'].z" and "line seq 4" in info.value.reason


def test_nulls_and_envelope_ids_are_listed_only_where_they_are() -> None:
    """``_nulls`` names exactly the keys present with null in each struct (null when none); ``_from_envelope``
    names the ids given beside the record only."""
    frames = [{"frame_index": 0, "timestamp": None, "landmarks": {}}, {"frame_index": 1, "landmarks": {}}]
    rec = {k: v for k, v in dict(sample_raw_action(i=0), frames=frames, fps=None).items() if k != "record_id"}
    env = envelope(rec, 5, "raw_action", record_id=str(uuid.UUID(int=77)))
    row = parquet.to_table([env], lambda v: a3cp.RawActionRecord).column("record").to_pylist()[0]
    assert row[NULLS] == ["fps"] and row[FROM_ENVELOPE] == ["record_id"]
    assert [f[NULLS] for f in row["frames"]] == [["timestamp"], None]
    assert row["modality"] == "vision" and row["performer_id"] is None  # absent: null, and not listed


def test_a_layout_1_file_reads_with_a_layout_2_file_as_one_table(tmp_path: Path, dir_fd: int) -> None:
    """A file written before the JSON type and ``_nulls`` (JSON text as plain strings) unifies with a new one."""
    new = parquet.to_table([envelope(sample_message(i=1), 1)], A3CP_MODELS)
    record, col = new.schema.field("record").type, new.column("record").combine_chunks()
    keep = [i for i in range(record.num_fields) if record.field(i).name != NULLS]
    fields = [record.field(i).with_type(pa.string()) if record.field(i).type == JSON_TYPE else record.field(i)
              for i in keep]
    children = [col.field(i).storage if record.field(i).type == JSON_TYPE else col.field(i) for i in keep]
    old_record = pa.StructArray.from_arrays(children, fields=fields)
    old = new.set_column(new.schema.get_field_index("record"), pa.field("record", old_record.type, False),
                         old_record)
    pq.write_table(old, tmp_path / "old.parquet")
    parquet.write(dir_fd, "new.parquet", new, "new")
    table = parquet.read_table([tmp_path / "old.parquet", tmp_path / "new.parquet"])
    assert table.schema.field("record").type.field("annotation").type == JSON_TYPE
    rows = table.column("record").to_pylist()
    assert rows[0]["annotation"] == rows[1]["annotation"] and rows[0][NULLS] is None


def test_lines_of_several_types_or_none_are_refused() -> None:
    """One table holds one schema type, and needs at least one line to know its schema."""
    with pytest.raises(ValidationError, match="one file holds one type"):
        parquet.to_table([envelope(sample_message(i=0), 1), envelope(sample_audit(), 2, "audit_event")],
                         A3CP_MODELS)
    with pytest.raises(ValueError, match="no records"):
        parquet.to_table([], A3CP_MODELS)


# -- round trips -------------------------------------------------------------------------

def record_examples(store: Store) -> dict[str, Callable[[str], type[BaseModel]]]:
    """Record every example type through the real store; returns each type's model_for."""
    for i in range(5):
        store.record(sample_message(i=i), schema_type="a3cp_message", producer="p1", pseq=i,
                     tags={"site": "lab", "run": str(i)} if i % 2 else None)
        v11 = dict(sample_message(i=10 + i, version="1.1.0"), model_version="gesture-v3")
        store.record(v11, schema_type="a3cp_message", action_id=f"act{i}")
        store.record(sample_raw_action(i=i, frames=3), schema_type="raw_action")
        store.record(dict(sample_audit(i=i), detail={"by": "carer01", "n": i}), schema_type="audit_event")
        base = {k: v for k, v in sample_audit(i=i).items() if k in a3cp.A3CPBase.model_fields}
        store.record(base, schema_type="base")
        feedback = {"entry_id": str(uuid.UUID(int=i + 1)), "timestamp": timestamp(i), "user_id": "elias01",
                    "session_id": "sess_demo", "intent_label": "drink", "label_status": "confirmed",
                    "user_response": "Yes", "label_correction": None}
        store.record(feedback, schema_type="feedback_log", record_id=str(uuid.UUID(int=100 + i)),
                     schema_version="1.0.0")
    return {name: spec.model_for for name, spec in store.registry.specs.items()}


@pytest.mark.parametrize("schema_type", ["a3cp_message", "raw_action", "audit_event", "base", "feedback_log"])
def test_parquet_equals_the_journal_for_every_example_type(
        store: Store, tmp_path: Path, dir_fd: int, schema_type: str) -> None:
    """Journal lines written by the store, converted and written to Parquet, read back value for value."""
    model_for = record_examples(store)[schema_type]
    envs = journal_envelopes(store.root, schema_type)
    assert len(envs) == 5 * (2 if schema_type == "a3cp_message" else 1)
    table = parquet.to_table(envs, model_for)
    parquet.write(dir_fd, f"{schema_type}.parquet", table, schema_type)
    assert pq.read_table(tmp_path / f"{schema_type}.parquet").schema == table.schema
    assert_file_equals_journal(tmp_path / f"{schema_type}.parquet", envs, model_for)


@pytest.mark.parametrize("module,schema_type,meta", [
    ("a3cp_message", "a3cp_message", {}),
    ("base", "base", {}),
    ("session_manager_start", "audit_event", {}),
    ("session_manager_end", "audit_event", {}),
    ("feedback_log", "feedback_log", {"record_id": "b9f33cdb-0000-46e4-90b5-40e2f1ae8d71", "schema_version": "1.0.0"}),
])
def test_parquet_equals_the_journal_for_the_corpus_examples(
        store: Store, tmp_path: Path, dir_fd: int, module: str, schema_type: str, meta: dict[str, Any]) -> None:
    """The A3CP project's own example records survive journal -> Parquet unchanged (skipped without the corpus)."""
    raw = corpus_bytes(module, "output")
    store.record(raw, schema_type=schema_type, **meta)
    spec = store.registry.get(schema_type)
    envs = journal_envelopes(store.root, schema_type)
    parquet.write(dir_fd, "c.parquet", parquet.to_table(envs, spec.model_for), "c")
    assert_file_equals_journal(tmp_path / "c.parquet", envs, spec.model_for)
    if meta:  # ids given beside the record fill the record's own required fields
        row = pq.read_table(tmp_path / "c.parquet").column("record").to_pylist()[0]
        assert str(row["record_id"]) == meta["record_id"]


def test_write_returns_the_digest_and_stores_zstd_schema_and_metadata(tmp_path: Path, dir_fd: int) -> None:
    """write() returns the sha256 of the final bytes; the file is zstd, with its schema and recorder metadata."""
    envs = [envelope(sample_message(i=i, version=v), i) for i, v in enumerate(["1.1.0", "1.0.1", "1.0.2"])]
    table = parquet.to_table(envs, A3CP_MODELS)
    sha = parquet.write(dir_fd, "m.parquet", table, "m")
    path = tmp_path / "m.parquet"
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest() == parquet.digest(path)
    f = pq.ParquetFile(path)
    assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    meta = f.schema_arrow.metadata
    assert meta[b"recorder.format_version"] == str(parquet.FORMAT_VERSION).encode()
    assert meta[b"recorder.schema_type"] == b"a3cp_message"
    assert json.loads(meta[b"recorder.schema_versions"]) == ["1.0.1", "1.0.2", "1.1.0"]
    assert b"ARROW:schema" in f.metadata.metadata  # the Arrow schema travels with the file
    assert f.schema_arrow.field("record").type.field("record_id").type == UUID_TYPE


def test_digest_streams_files_larger_than_its_chunk(tmp_path: Path) -> None:
    """digest() of a multi-chunk file equals sha256 of its bytes."""
    data = os.urandom((1 << 20) * 2 + 17)
    (tmp_path / "big").write_bytes(data)
    assert parquet.digest(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_timestamps_are_stored_as_instants(tmp_path: Path, dir_fd: int) -> None:
    """Equal instants written as ``Z`` or ``+00:00``, or with nanoseconds, read back as the same UTC microsecond."""
    texts = ["2026-03-01T10:00:00.123Z", "2026-03-01T10:00:00.123+00:00", "2026-03-01T10:00:00.123000999Z"]
    envs = [envelope(dict(sample_message(i=i), timestamp=ts), i) for i, ts in enumerate(texts)]
    parquet.write(dir_fd, "t.parquet", parquet.to_table(envs, A3CP_MODELS), "t")
    t = pq.read_table(tmp_path / "t.parquet")
    want = datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
    assert t.column("timestamp").to_pylist() == [want] * 3
    assert [r["timestamp"] for r in t.column("record").to_pylist()] == [want] * 3


class Inner(BaseModel):
    when: datetime
    day: date
    id: uuid.UUID
    ok: bool
    n: int
    names: list[str]
    scores: dict[str, float]
    point: a3cp.Landmark


class Outer(BaseModel):
    inner: Inner | None = None


def test_absent_optional_structs_with_required_fields_write_and_read_back_as_null(
        tmp_path: Path, dir_fd: int) -> None:
    """A null optional struct whose fields are required is written (Parquet checks required columns) and reads back null."""
    full = {"when": "2026-01-01T00:00:00Z", "day": "2026-01-02", "id": str(uuid.UUID(int=9)), "ok": True, "n": 2,
            "names": ["a"], "scores": {"a": 0.5}, "point": {"x": 0.1, "y": 0.2}}
    envs = [envelope({}, 1, "outer"), envelope({"inner": full}, 2, "outer"), envelope({"inner": None}, 3, "outer")]
    parquet.write(dir_fd, "o.parquet", parquet.to_table(envs, lambda v: Outer), "o")
    rows = pq.read_table(tmp_path / "o.parquet").column("record").to_pylist()
    assert [r["inner"] is None for r in rows] == [True, False, True]
    inner = rows[1]["inner"]
    assert inner["day"] == date(2026, 1, 2) and inner["scores"] == [("a", 0.5)]
    assert inner["point"] == {"x": 0.1, "y": 0.2, "z": None, "visibility": None}  # absent, not defaulted
    sm = dict(sample_message(i=1))
    del sm["raw_features_ref"], sm["classifier_output"]
    parquet.write(dir_fd, "m.parquet", parquet.to_table([envelope(sm, 1)], A3CP_MODELS), "m")
    row = pq.read_table(tmp_path / "m.parquet").column("record").to_pylist()[0]
    assert row["raw_features_ref"] is None and row["classifier_output"] is None


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HoldsEmpty(BaseModel):
    model_config = ConfigDict(extra="forbid")

    empty: Empty | None = None


def test_a_model_without_fields_still_writes(tmp_path: Path, dir_fd: int) -> None:
    """A field-less nested model keeps an ``_extra`` column, since Parquet cannot store an empty struct."""
    envs = [envelope({"empty": {}}, 1, "e"), envelope({}, 2, "e")]
    parquet.write(dir_fd, "e.parquet", parquet.to_table(envs, lambda v: HoldsEmpty), "e")
    rows = pq.read_table(tmp_path / "e.parquet").column("record").to_pylist()
    assert rows == [{"empty": {EXTRA: None}, NULLS: None}, {"empty": None, NULLS: None}]


# -- evolution ---------------------------------------------------------------------------

def mixed_segment() -> list[dict[str, Any]]:
    """1.0.x and 1.1.x a3cp_message lines interleaved; one 1.0 line carries model_version as an extra."""
    envs = []
    for i in range(6):
        if i % 2:
            rec = dict(sample_message(i=i, version="1.1.0"), model_version=f"m{i}")
        else:
            rec = sample_message(i=i, version="1.0.1")
        envs.append(envelope(rec, i + 1))
    envs[2]["record"] = dict(envs[2]["record"], model_version="not-a-column-in-1.0")
    return envs


def test_a_segment_mixing_minor_versions_gives_one_table() -> None:
    """1.0 and 1.1 rows share one schema in journal order; model_version is null in the 1.0 rows."""
    envs = mixed_segment()
    table = parquet.to_table(envs, A3CP_MODELS)
    assert table.column("seq").to_pylist() == [1, 2, 3, 4, 5, 6]
    record = table.schema.field("record").type
    assert record.field("model_version").nullable
    assert [record.field(i).name for i in range(record.num_fields)][-4:] == ["model_version", NULLS, FROM_ENVELOPE,
                                                                             EXTRA]
    rows = table.column("record").to_pylist()
    assert [r["model_version"] for r in rows] == [None, "m1", None, "m3", None, "m5"]
    # under 1.0 the field is not declared, so it is an extra there, as the 1.0 model saw it
    assert json.loads(rows[2][EXTRA]) == {"model_version": "not-a-column-in-1.0"}
    assert rows[0][EXTRA] is None and rows[1][EXTRA] is None


def test_read_table_unifies_an_old_and_a_new_file(tmp_path: Path, dir_fd: int) -> None:
    """A 1.0-only file and a 1.1 file read as one table with the unified schema; old rows get nulls."""
    old = [envelope(sample_message(i=i, version="1.0.1"), i) for i in range(3)]
    new = [envelope(dict(sample_message(i=i, version="1.1.0"), model_version="v2"), i) for i in range(3, 5)]
    parquet.write(dir_fd, "a_000.parquet", parquet.to_table(old, A3CP_MODELS), "a")
    parquet.write(dir_fd, "a_001.parquet", parquet.to_table(new, A3CP_MODELS), "a")
    old_schema = pq.read_schema(tmp_path / "a_000.parquet")
    assert "model_version" not in [f.name for f in old_schema.field("record").type]
    table = parquet.read_table([tmp_path / "a_000.parquet", str(tmp_path / "a_001.parquet")])
    assert table.num_rows == 5 and table.column("seq").to_pylist() == [0, 1, 2, 3, 4]
    unified = parquet.to_table(old + new, A3CP_MODELS).schema
    assert table.schema.remove_metadata() == unified.remove_metadata()
    assert json.loads(table.schema.metadata[b"recorder.schema_versions"]) == ["1.0.1", "1.1.0"]
    versions = [r["model_version"] for r in table.column("record").to_pylist()]
    assert versions == [None, None, None, "v2", "v2"]
    # the same rows, whichever file order is asked for
    backwards = parquet.read_table([tmp_path / "a_001.parquet", tmp_path / "a_000.parquet"])
    assert sorted(backwards.column("seq").to_pylist()) == [0, 1, 2, 3, 4]


def test_read_table_refuses_files_of_different_types(tmp_path: Path, dir_fd: int) -> None:
    """Files of two schema types are not one table."""
    parquet.write(dir_fd, "m.parquet", parquet.to_table([envelope(sample_message(), 1)], A3CP_MODELS), "m")
    audit = parquet.to_table([envelope(sample_audit(), 2, "audit_event")], lambda v: a3cp.AuditEvent)
    parquet.write(dir_fd, "a.parquet", audit, "a")
    with pytest.raises(ValueError, match="several schema types"):
        parquet.read_table([tmp_path / "m.parquet", tmp_path / "a.parquet"])
    with pytest.raises(ValueError):
        parquet.read_table([])


class Before(BaseModel):
    score: int


class After(BaseModel):
    score: str


def test_versions_that_change_a_column_type_are_refused() -> None:
    """A minor version may add fields, not retype them: the conflict names the column."""
    envs = [envelope({"score": 1, "schema_version": "1.0.0"}, 1, "s"),
            envelope({"score": "1", "schema_version": "1.1.0"}, 2, "s")]
    with pytest.raises(ValidationError, match="'score'"):
        parquet.to_table(envs, models_of({"1.0": Before, "1.1": After}))


# -- extra fields --------------------------------------------------------------------------

def test_extra_fields_land_in_one_json_column(tmp_path: Path, dir_fd: int) -> None:
    """Undeclared fields of an extra="allow" model are kept as one JSON object in ``_extra``, null when none."""
    plain = sample_audit(i=0)
    rich = dict(sample_audit(i=1), details={"reason": "lunch", "ids": [1, 2]}, note="ok", missing=None)
    parquet.write(dir_fd, "e.parquet", parquet.to_table(
        [envelope(plain, 1, "audit_event"), envelope(rich, 2, "audit_event")], lambda v: a3cp.AuditEvent), "e")
    rows = pq.read_table(tmp_path / "e.parquet").column("record").to_pylist()
    assert rows[0][EXTRA] is None
    assert json.loads(rows[1][EXTRA]) == {"details": {"reason": "lunch", "ids": [1, 2]}, "note": "ok",
                                           "missing": None}
    assert rows[1]["event_type"] == "session_start"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(probs=st.dictionaries(st.text(min_size=1, max_size=10), st.floats(0, 1), max_size=6),
       extra=st.dictionaries(st.text(min_size=1, max_size=6).filter(
           lambda k: k not in a3cp.A3CPMessage.model_fields), json_values, max_size=4),
       annotation=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_maps_extras_and_json_columns_keep_any_content(
        probs: dict[str, float], extra: dict[str, Any], annotation: dict[str, Any] | None) -> None:
    """Any class map, any undeclared fields and any annotation object come back equal to the journal's."""
    rec = dict(sample_message(i=3), classifier_output={**probs, "unknown": 0.5}, annotation=annotation, **extra)
    a3cp.A3CPMessage.model_validate(rec)
    env = envelope(msgspec.json.decode(msgspec.json.encode(rec)), 1)
    table = parquet.to_table([env], A3CP_MODELS)
    record_type = table.schema.field("record").type
    got = canon_parquet(table.column("record").to_pylist()[0], record_type)
    assert got == canon_journal(env["record"], record_type)


# -- other readers ---------------------------------------------------------------------------

def write_messages(tmp_path: Path, dir_fd: int) -> Path:
    envs = [envelope(sample_message(i=i), i) for i in range(4)]
    parquet.write(dir_fd, "m.parquet", parquet.to_table(envs, A3CP_MODELS), "m")
    return tmp_path / "m.parquet"


def test_pandas_opens_the_file_directly(tmp_path: Path, dir_fd: int) -> None:
    """pandas.read_parquet reads the file as it is: UTC timestamps, one row per record."""
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(write_messages(tmp_path, dir_fd))
    assert len(df) == 4 and list(df["seq"]) == [0, 1, 2, 3]
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert df["record"].iloc[0]["capture_id"] is not None


def test_duckdb_queries_the_file_directly(tmp_path: Path, dir_fd: int) -> None:
    """DuckDB reads the file with no help: UUID and map columns, struct field access, UTC times."""
    duckdb = pytest.importorskip("duckdb")
    path = write_messages(tmp_path, dir_fd)
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT seq, record.capture_id, record.classifier_output['unknown'], typeof(record.capture_id), "
            "record.raw_features_ref.shape, epoch_us(timestamp) "
            f"FROM read_parquet('{path}') ORDER BY seq").fetchall()
    finally:
        con.close()
    envs = [sample_message(i=i) for i in range(4)]
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    assert [str(r[1]) for r in rows] == [e["capture_id"] for e in envs]
    assert [r[2] for r in rows] == [e["classifier_output"]["unknown"] for e in envs]
    if UUID_TYPE != pa.string():
        assert rows[0][3] == "UUID"
    assert rows[0][4] == [42, 128]
    assert rows[1][5] == int(instant(envs[1]["timestamp"]).timestamp() * 1_000_000)


# -- crash safety --------------------------------------------------------------------------------

class Crash(Exception):
    """Stands in for the process dying at a fault point."""


def table_of_messages() -> pa.Table:
    return parquet.to_table([envelope(sample_message(i=i), i) for i in range(3)], A3CP_MODELS)


def test_the_temporary_file_is_hidden_and_gone_after_write(
        tmp_path: Path, dir_fd: int, no_fault_hook: None) -> None:
    """While being written the file has a hidden name no *.parquet glob matches; afterwards only the final file is left."""
    seen: list[list[str]] = []

    def look(point: str) -> None:
        if point == "before_rename":
            seen.append(sorted(os.listdir(tmp_path)))

    _durable.set_fault_hook(look)
    parquet.write(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert len(seen) == 1 and len(seen[0]) == 1
    temp = seen[0][0]
    assert temp.startswith(".") and not temp.endswith(".parquet")
    assert os.listdir(tmp_path) == ["s_000.parquet"]


@pytest.mark.parametrize("point", ["before_fsync", "before_rename"])
def test_a_crash_before_the_rename_leaves_no_file_under_the_final_name(
        tmp_path: Path, dir_fd: int, no_fault_hook: None, point: str) -> None:
    """Dying before the rename leaves at most a hidden temp file, never a (half) file under the final name."""
    def die(p: str) -> None:
        if p == point:
            raise Crash(p)

    _durable.set_fault_hook(die)
    with pytest.raises(Crash):
        parquet.write(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert not (tmp_path / "s_000.parquet").exists()
    assert list(tmp_path.glob("*.parquet")) == []
    assert all(name.startswith(".") for name in os.listdir(tmp_path))


@pytest.mark.parametrize("err,exc", [(errno.ENOSPC, StorageFull), (errno.EIO, DurabilityError)])
def test_an_io_error_while_publishing_is_wrapped_and_cleans_up(
        tmp_path: Path, dir_fd: int, no_fault_hook: None, err: int, exc: type[Exception]) -> None:
    """A full disk or an I/O error during publication raises the recorder's error and leaves no file at all."""
    def fail(p: str) -> None:
        if p == "before_fsync":
            raise OSError(err, os.strerror(err))

    _durable.set_fault_hook(fail)
    with pytest.raises(exc):
        parquet.write(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_inside_the_parquet_writer_is_storage_full(
        tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC raised while pyarrow writes the temp file surfaces as StorageFull and leaves no file behind."""
    def full(self: Any, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(parquet._HashingWriter, "write", full)
    with pytest.raises(StorageFull):
        parquet.write(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert os.listdir(tmp_path) == []
