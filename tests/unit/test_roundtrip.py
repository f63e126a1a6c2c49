"""Exact round trip: a record read back is the record accepted, from its journal and from its Parquet file.

Records of every shipped model are generated from a full valid example, with
each optional field, at every depth (nested models, lists of structs, maps of
structs), drawn absent, explicitly null (where its type admits None) or set;
extra-field models get undeclared keys holding nulls; some ids travel as
metadata only (or beside an explicit null in the record). Each is stored
through a real ``Store`` (every type as Parquet segments), read back from its
journal, then sealed (journal -> Parquet, journal removed) and read back
again, with ``recorder.read`` and ``recorder export``. The module prints how
many records and optional-field draws each model got.
"""

from __future__ import annotations

import copy
import types
import typing
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter
from unit_support import canon

from recorder import Store, a3cp, read
from recorder.cli import main
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp

CONFIG = """\
[recorder]
min_free_bytes = 0

[defaults]
format = "parquet"
max_record_bytes = 1048576

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "d/{user_id}/{session_id}/{schema_type}_{segment:04d}.parquet"

[types.a3cp_message.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
path = "d/{user_id}/{session_id}/{schema_type}_{segment:04d}.parquet"

[types.audit_event]
model = "recorder.a3cp:AuditEvent"
path = "d/{user_id}/{session_id}/{schema_type}_{segment:04d}.parquet"

[types.feedback_log]
model = "recorder.a3cp:FeedbackLogEntry"
path = "d/{user_id}/{session_id}/{schema_type}_{segment:04d}.parquet"

[types.base]
model = "recorder.a3cp:A3CPBase"
path = "d/{user_id}/{session_id}/{schema_type}_{segment:04d}.parquet"
"""

_ANNOTATION = {"intent": "drink", "note": None, "nested": {"a": None, "b": [None, 1, {"c": None}]}, "n": 1.5}


def _full(model: type[BaseModel]) -> tuple[str, dict[str, Any]]:
    """(schema type, a valid record of ``model`` with every optional field set, at every depth)."""
    if model is a3cp.RawActionRecord:
        rec = sample_raw_action(i=3, frames=3)
        for k, frame in enumerate(rec["frames"]):
            frame["timestamp"] = timestamp(k / 30)
        rec["performer_id"] = "carer01"
        return "raw_action", rec
    if model in (a3cp.A3CPMessage, a3cp.A3CPMessageV1_1):
        v11 = model is a3cp.A3CPMessageV1_1
        rec = dict(sample_message(i=5, version="1.1.0" if v11 else "1.0.1"), annotation=_ANNOTATION)
        if v11:
            rec["model_version"] = "gesture-v3"
        return "a3cp_message", rec
    audit = dict(sample_audit(i=2), modality="gesture")
    if model is a3cp.AuditEvent:
        return "audit_event", audit
    if model is a3cp.A3CPBase:
        return "base", {k: v for k, v in audit.items() if k in a3cp.A3CPBase.model_fields}
    assert model is a3cp.FeedbackLogEntry
    return "feedback_log", {**{k: v for k, v in audit.items() if k in a3cp.A3CPBase.model_fields},
                            "schema_version": "1.0.0", "entry_id": str(uuid.UUID(int=7)),
                            "intent_label": "drink", "label_status": "confirmed"}


MODELS = [a3cp.A3CPBase, a3cp.A3CPMessage, a3cp.A3CPMessageV1_1, a3cp.RawActionRecord, a3cp.AuditEvent,
          a3cp.FeedbackLogEntry]
#: model -> (records, Counter of "<depth> <absent|null|set>" over optional-field draws)
COUNTS: dict[str, tuple[Counter[str], Counter[str]]] = {m.__name__: (Counter(), Counter()) for m in MODELS}
_ID_KEYS = ("record_id", "schema_version", "user_id", "session_id")


def _admits_null(info: Any) -> bool:
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    try:
        TypeAdapter(annotation).validate_python(None)
    except Exception:  # noqa: BLE001 - pydantic's verdict: None is not a value of this field
        return False
    return True


def _inner(annotation: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and ``X | None``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _vary_value(draw: st.DrawFn, annotation: Any, value: Any, depth: int, counts: Counter[str]) -> Any:
    t = _inner(annotation)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if isinstance(t, type) and issubclass(t, BaseModel) and isinstance(value, dict):
        return _vary_model(draw, t, value, depth, counts)
    if origin is list and isinstance(value, list):
        return [_vary_value(draw, args[0], v, depth + 1, counts) for v in value]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _vary_value(draw, args[1], v, depth + 1, counts) for k, v in value.items()}
    return value


_json = st.recursive(st.none() | st.integers(-5, 5) | st.text(alphabet="abc", max_size=3),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("pqr"), inner,
                                                                                   max_size=3), max_leaves=6)


def _vary_model(draw: st.DrawFn, model: type[BaseModel], value: dict[str, Any], depth: int,
                counts: Counter[str]) -> dict[str, Any]:
    """Each optional field absent, null (if admitted) or set; nested models likewise; extras with nulls."""
    out: dict[str, Any] = {}
    where = "top" if depth == 0 else "nested"
    for name, info in model.model_fields.items():
        key = info.alias or name
        v = _vary_value(draw, info.annotation, value[key], depth + 1, counts)
        if info.is_required():
            out[key] = v
            continue
        choice = draw(st.sampled_from(["absent", "set", "null"] if _admits_null(info) else ["absent", "set"]))
        counts[f"{where} {choice}"] += 1
        if choice != "absent":
            out[key] = v if choice == "set" else None
    if model.model_config.get("extra") == "allow":
        extras = draw(st.dictionaries(st.sampled_from(["x_note", "x_none", "x_deep"]), _json, max_size=2))
        counts[f"{where} extra"] += len(extras)
        out.update(extras)
    return out


@st.composite
def deliveries(draw: st.DrawFn, model: type[BaseModel]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(schema type, record as sent, metadata): ids sometimes given beside the record only."""
    schema_type, full = _full(model)
    counts = COUNTS[model.__name__][1]
    rec = _vary_model(draw, model, copy.deepcopy(full), 0, counts)
    meta: dict[str, Any] = {}
    for k in _ID_KEYS:
        if k in full and draw(st.integers(0, 3)) == 0:
            meta[k] = full[k]
            how = draw(st.sampled_from(["absent", "null"]))
            counts[f"metadata-only {how}"] += 1
            if how == "absent":
                rec.pop(k, None)
            else:
                rec[k] = None
    return schema_type, rec, meta


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Store]:
    """One in-process recorder whose every type is sealed into Parquet; prints the counts at the end."""
    work = tmp_path_factory.mktemp("roundtrip")
    (work / "r.toml").write_text(CONFIG, encoding="utf-8")
    with Store(work / "r.toml", data_root=work / "data") as s:
        yield s
    lines = ["", "test_roundtrip: records read back equal from journal and from Parquet, per shipped model:"]
    for name, (records, draws) in COUNTS.items():
        lines.append(f"  {name}: {records['records']} records; optional fields "
                     + ", ".join(f"{k} {n}" for k, n in sorted(draws.items())))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():  # shown even when the tests pass
            print("\n".join(lines), flush=True)


def seal_everything(store: Store) -> None:
    """Close every open segment for good and wait until the sealer converted it."""
    for w in store.writers.values():
        for rel in list(w.open):
            w.seal(rel)
    assert store.sealer.wait_idle(60)
    assert not store.sealer.errors, store.sealer.errors


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_record_reads_back_as_accepted_from_its_journal_and_its_parquet_file(
        store: Store, model: type[BaseModel]) -> None:
    """Absent stays absent and null stays null at every depth, before and after the journal became Parquet."""
    user = f"u-{model.__name__}"
    sent: dict[int, tuple[str, dict[str, Any]]] = {}

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(deliveries(model), min_size=1, max_size=4), st.sampled_from(["s1", "s2"]))
    def one(items: list[tuple[str, dict[str, Any], dict[str, Any]]], session: str) -> None:
        for schema_type, rec, meta in items:
            for key, value in (("user_id", user), ("session_id", session)):  # this test's own streams
                if key in meta:
                    meta[key] = value
                elif rec.get(key) is not None:
                    rec[key] = value
            if rec.get("user_id") is None and "user_id" not in meta:
                meta["user_id"] = user
            seq = store.record(msgspec.json.encode(rec), schema_type=schema_type, **meta)
            sent[seq] = (schema_type, rec)
            COUNTS[model.__name__][0]["records"] += 1

    one()
    journal = {e["seq"]: e for e in read(store.root, user_id=user)}
    assert sorted(journal) == sorted(sent)
    for seq, (_, rec) in sent.items():
        assert journal[seq]["record"] == rec, f"journal read of seq {seq}"
    seal_everything(store)
    files = sorted(p.suffix for p in (Path(store.root) / "d" / user).rglob("*_*.*") if p.suffix in (".jsonl", ".parquet"))
    assert files and set(files) == {".parquet"}, files  # every record is now read from Parquet
    from_parquet = {e["seq"]: e for e in read(store.root, user_id=user)}
    assert sorted(from_parquet) == sorted(sent)
    for seq, (_, rec) in sent.items():
        got = from_parquet[seq]["record"]
        assert canon(got) == canon(rec), f"Parquet read of seq {seq}: {got} != {rec}"
        assert {k: journal[seq][k] for k in _ID_KEYS} == {k: from_parquet[seq][k] for k in _ID_KEYS}


def test_export_gives_back_the_records_as_accepted(store: Store, tmp_path: Path) -> None:
    """``recorder export --format jsonl`` of sealed Parquet segments holds each record as it was accepted."""
    full = _full(a3cp.RawActionRecord)[1]
    sent = []
    for k in range(3):
        rec = copy.deepcopy(full)
        rec["record_id"] = str(uuid.UUID(int=1000 + k))
        rec["user_id"] = "u-export"
        del rec["frames"][k]["timestamp"]  # absent in one frame, null in the next
        rec["frames"][(k + 1) % 3]["timestamp"] = None
        rec["session_id"] = None
        sent.append(rec)
        store.record(rec, schema_type="raw_action", session_id="s-export")
    seal_everything(store)
    out = tmp_path / "x.jsonl"
    config = str(Path(store.config.source))
    assert main(["export", str(store.root), "--type", "raw_action", "--user", "u-export", "--format", "jsonl",
                 "--config", config, "--out", str(out)]) == 0
    got = [msgspec.json.decode(line)["record"] for line in out.read_bytes().splitlines()]
    assert [canon(r) for r in got] == [canon(r) for r in sent]
