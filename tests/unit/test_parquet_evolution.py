"""Parquet files over time and beside other tools: minor versions in one table, extra fields, pandas and DuckDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parquet_support import dir_fd  # noqa: F401 - the fixture
from parquet_support import A3CP_MODELS, UUID_TYPE, canon_journal, canon_parquet, envelope, instant, models_of
from pydantic import BaseModel
from unit_support import write_parquet

from recorder import a3cp
from recorder.exceptions import ValidationError
from recorder.storage.formats import parquet
from recorder.storage.formats.parquet import EXTRA, FROM_ENVELOPE, NULLS
from recorder.testing import sample_audit, sample_message

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
    write_parquet(dir_fd, "a_000.parquet", parquet.to_table(old, A3CP_MODELS), "a")
    write_parquet(dir_fd, "a_001.parquet", parquet.to_table(new, A3CP_MODELS), "a")
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
    write_parquet(dir_fd, "m.parquet", parquet.to_table([envelope(sample_message(), 1)], A3CP_MODELS), "m")
    audit = parquet.to_table([envelope(sample_audit(), 2, "audit_event")], lambda v: a3cp.AuditEvent)
    write_parquet(dir_fd, "a.parquet", audit, "a")
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
    write_parquet(dir_fd, "e.parquet", parquet.to_table(
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
    write_parquet(dir_fd, "m.parquet", parquet.to_table(envs, A3CP_MODELS), "m")
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

