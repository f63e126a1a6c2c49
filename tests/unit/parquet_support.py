"""Helpers of the Parquet tests: the example models' column types, record lines as the writer builds them,
and the check that a Parquet file holds exactly what its journal holds."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel

from recorder import a3cp
from recorder.storage.formats.parquet import EXTRA, FROM_ENVELOPE, INTERNAL, JSON_TYPE, NULLS

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

