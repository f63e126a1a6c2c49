"""Bulk Parquet conversion gives the table the former value-by-value builders gave (tests/unit/parquet_oracle.py)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parquet_oracle import old_to_table
from parquet_support import envelope
from pydantic import BaseModel, ConfigDict
from test_parquet import Lax, Outer

from recorder import Store
from recorder.schema.config import load_config
from recorder.exceptions import ValidationError
from recorder.storage.formats import parquet
from recorder.reading.reader import journal_files
from recorder.schema.registry import Registry
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp

REGISTRY = Registry.from_config(load_config(None))


def assert_same(lines: list[bytes], model_for: Any) -> pa.Table:
    """The bulk table equals the oracle's, schema (with metadata) and values."""
    old = old_to_table([msgspec.json.decode(line) for line in lines], model_for)
    new = parquet.to_table(lines, model_for)
    assert new.schema.equals(old.schema, check_metadata=True), f"{new.schema}\n!=\n{old.schema}"
    for name in old.column_names:
        assert new.column(name).equals(old.column(name)), name
    assert new.to_pylist() == old.to_pylist()
    return new


def stored_lines(root: Path, schema_type: str) -> list[bytes]:
    """The record lines of one type as the writer stored them (headers left out)."""
    out: list[bytes] = []
    for path in journal_files([root]):
        data = path.read_bytes().split(b"\n")
        if msgspec.json.decode(data[0]).get("schema_type") == schema_type:
            out += [line for line in data[1:] if line]
    return out


def variants(schema_type: str, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record of a shipped type in one of several shapes, and the metadata sent beside it."""
    fine = "2026-01-01T00:00:01.123456789Z"  # more digits than a microsecond: cut, not rounded
    if schema_type == "a3cp_message":
        rec = sample_message("u1", "s1", i, version="1.1.0" if i % 3 == 0 else "1.0.1")
        if i % 3 == 0:
            rec["model_version"] = f"m{i}"
        if i % 4 == 1:
            rec["extra_note"] = {"by": "carer", "n": i, "nested": [1, None, {"x": "y"}]}  # extra fields
        if i % 5 == 2:
            rec["classifier_output"] = None  # explicit null
        if i % 7 == 3:
            rec["timestamp"] = fine
        if i % 6 == 4:
            rec["capture_id"] = rec["capture_id"].upper()
    elif schema_type == "raw_action":
        rec = sample_raw_action("u1", "s1", i)
        if i % 4 == 1:
            rec["frames"][0]["timestamp"] = None
            rec["frames"][1]["timestamp"] = fine
        if i % 5 == 2:
            rec["fps"] = None
        if i % 6 == 3:
            rec["frames"][0]["landmarks"]["pose_landmarks"]["nose"] = {"x": 1, "y": 0}  # ints, defaults left out
    elif schema_type in ("audit_event", "base"):
        rec = sample_audit("u1", "s1", i=i)
        if schema_type == "base":
            rec.pop("event_type", None)
        elif i % 3 == 1:
            rec["details"] = {"reason": "test", "codes": [i, i + 1]}
    else:
        rec = {"record_id": str(uuid.UUID(int=i + 1)), "timestamp": timestamp(i), "schema_version": "1.0.0",
               "user_id": "u1", "session_id": "s1", "entry_id": str(uuid.UUID(int=10_000 + i)),
               "intent_label": "drink" if i % 2 else None, "comment": f"note {i}"}
    meta: dict[str, Any] = {}
    if i % 4 == 2 and schema_type != "base":  # ids given beside the record, not in it
        meta = {"record_id": rec.pop("record_id"), "session_id": rec.pop("session_id")}
    return rec, meta


@pytest.mark.parametrize("schema_type", sorted(REGISTRY.specs))
def test_bulk_equals_the_value_by_value_table_for_every_shipped_type(tmp_path: Path, schema_type: str) -> None:
    """Records stored by the real writer, with minor versions, extra fields, nulls and metadata ids, convert alike."""
    root = tmp_path / "d"
    with Store(None, data_root=root) as s:
        for i in range(40):
            rec, meta = variants(schema_type, i)
            s.record(rec, schema_type=schema_type, **meta)
    lines = stored_lines(root, schema_type)
    assert len(lines) == 40
    table = assert_same(lines, REGISTRY.get(schema_type).model_for)
    if schema_type == "a3cp_message":
        assert set(table.schema.metadata[b"recorder.schema_versions"].decode().strip("[]").split(",")) == {
            '"1.0.1"', '"1.1.0"'}


def test_lax_values_take_the_value_by_value_path_with_the_same_result() -> None:
    """Lax values, kitchen-sink annotations and absent optional structs convert as before."""
    lax = [msgspec.json.encode(envelope({"n": "3", "x": "1.5", "ok": "yes", "at": 1_700_000_000}, 1, "lax")),
           msgspec.json.encode(envelope({"n": 4, "x": 2, "ok": True, "at": "2026-01-01T00:00:00Z"}, 2, "lax"))]
    assert_same(lax, lambda v: Lax)
    outer = [msgspec.json.encode(envelope(r, i, "outer")) for i, r in enumerate([{}, {"inner": None}], 1)]
    try:
        assert_same(outer, lambda v: Outer)
    except Exception as e:  # both refuse alike, or both convert alike
        with pytest.raises(type(e)):
            old_to_table([msgspec.json.decode(line) for line in outer], lambda v: Outer)


class Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: float
    y: float | None = None


class Fuzz(BaseModel):
    """A model the typed path takes whole: every kind of column, nullable and not."""

    model_config = ConfigDict(extra="forbid")

    n: int
    when: datetime | None = None
    day: date | None = None
    id: uuid.UUID | None = None
    counts: dict[str, int] = {}
    leaves: list[Leaf] = []
    grid: dict[str, dict[str, Leaf]] = {}
    anything: Any = None
    maybe: list[int | None] = []
    ok: bool = False


scalars = (st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.sampled_from(
    ["3", "yes", "1.5", "x", "2026-01-01", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.1234567+02:00",
     "0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5bd9cb469fa16570867728950e", 1_700_000_000]))
TIMES = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.1234567+02:00", "2026-01-01 00:00:00",
                         "2026-01-01T00:00:00.5Z", 1_700_000_000])
floats = st.floats(-2, 2) | st.integers(-3, 3)
leaf = st.fixed_dictionaries({"x": floats | scalars}, optional={"y": floats | st.none() | scalars})
values = {"when": st.none() | TIMES | scalars, "day": st.none() | st.sampled_from(["2026-01-02", "20260102"]) | scalars,
          "id": st.none() | st.uuids().map(str) | scalars, "ok": st.booleans() | scalars,
          "counts": st.dictionaries(st.text(max_size=2), st.integers(-3, 3) | scalars, max_size=3),
          "leaves": st.lists(leaf, max_size=3) | scalars, "grid": st.dictionaries(
              st.text(max_size=2), st.dictionaries(st.text(max_size=2), leaf, max_size=2), max_size=2),
          "anything": st.recursive(scalars, lambda c: st.lists(c, max_size=2)
                                   | st.dictionaries(st.text(max_size=2), c, max_size=2), max_leaves=5),
          "maybe": st.lists(st.none() | st.integers(-3, 3), max_size=3) | st.lists(scalars, max_size=2)}
records = st.fixed_dictionaries({"n": st.integers(0, 5) | st.sampled_from(["3", 2.0])} | {}, optional=values) \
    | st.fixed_dictionaries({}, optional={"n": scalars, **values})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=4))
def test_bulk_and_value_by_value_agree_on_any_input(recs: list[dict[str, Any]]) -> None:
    """On arbitrary JSON (valid or not for the model), both convert to the same table or refuse alike."""
    lines = [msgspec.json.encode(envelope(r, i, "fuzz")) for i, r in enumerate(recs, 1)]
    try:
        old = old_to_table([msgspec.json.decode(line) for line in lines], lambda v: Fuzz)
    except ValidationError as e:
        with pytest.raises(ValidationError) as info:
            parquet.to_table(lines, lambda v: Fuzz)
        assert (info.value.field, info.value.reason) == (e.field, e.reason)
        return
    new = parquet.to_table(lines, lambda v: Fuzz)
    assert new.schema.equals(old.schema) and new.to_pylist() == old.to_pylist() and new.equals(old)
