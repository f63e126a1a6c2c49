"""Parquet format: the schema from the models, values converted as pydantic does, journal -> table -> file equality."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from parquet_support import dir_fd  # noqa: F401 - the fixture
from parquet_support import (
    A3CP_MODELS,
    EXAMPLE_MODELS,
    TS,
    UUID_TYPE,
    assert_file_equals_journal,
    envelope,
    journal_envelopes,
)
from pydantic import BaseModel, ConfigDict, Field
from unit_support import corpus_bytes, write_parquet

from recorder import Store, a3cp
from recorder.exceptions import ValidationError
from recorder.storage.formats import parquet
from recorder.storage.formats.parquet import EXTRA, FROM_ENVELOPE, JSON_TYPE, NULLS
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp

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
    write_parquet(dir_fd, "new.parquet", new, "new")
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
    write_parquet(dir_fd, f"{schema_type}.parquet", table, schema_type)
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
    write_parquet(dir_fd, "c.parquet", parquet.to_table(envs, spec.model_for), "c")
    assert_file_equals_journal(tmp_path / "c.parquet", envs, spec.model_for)
    if meta:  # ids given beside the record fill the record's own required fields
        row = pq.read_table(tmp_path / "c.parquet").column("record").to_pylist()[0]
        assert str(row["record_id"]) == meta["record_id"]


def test_write_returns_the_digest_and_stores_zstd_schema_and_metadata(tmp_path: Path, dir_fd: int) -> None:
    """write() returns the sha256 of the final bytes; the file is zstd, with its schema and recorder metadata."""
    envs = [envelope(sample_message(i=i, version=v), i) for i, v in enumerate(["1.1.0", "1.0.1", "1.0.2"])]
    table = parquet.to_table(envs, A3CP_MODELS)
    sha = write_parquet(dir_fd, "m.parquet", table, "m")
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
    write_parquet(dir_fd, "t.parquet", parquet.to_table(envs, A3CP_MODELS), "t")
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
    write_parquet(dir_fd, "o.parquet", parquet.to_table(envs, lambda v: Outer), "o")
    rows = pq.read_table(tmp_path / "o.parquet").column("record").to_pylist()
    assert [r["inner"] is None for r in rows] == [True, False, True]
    inner = rows[1]["inner"]
    assert inner["day"] == date(2026, 1, 2) and inner["scores"] == [("a", 0.5)]
    assert inner["point"] == {"x": 0.1, "y": 0.2, "z": None, "visibility": None}  # absent, not defaulted
    sm = dict(sample_message(i=1))
    del sm["raw_features_ref"], sm["classifier_output"]
    write_parquet(dir_fd, "m.parquet", parquet.to_table([envelope(sm, 1)], A3CP_MODELS), "m")
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
    write_parquet(dir_fd, "e.parquet", parquet.to_table(envs, lambda v: HoldsEmpty), "e")
    rows = pq.read_table(tmp_path / "e.parquet").column("record").to_pylist()
    assert rows == [{"empty": {EXTRA: None}, NULLS: None}, {"empty": None, NULLS: None}]

