"""The compiled accept step agrees with the reference rules: the same verdict and the same stored
line parts for generated, mutated and upstream records, whichever path a record takes.

``RECORDER_FUZZ_SCALE=10`` runs ten times as many cases (the long run docs/PERFORMANCE.md reports).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS
from hypothesis import given, settings
from pydantic import BaseModel, ConfigDict
from hypothesis import strategies as st
from fuzz_mutations import MUTATIONS
from fuzz_support import RUN, SCHEMAS, deliveries, examples, stype_of, valid_records, value_paths

from recorder.exceptions import ValidationError
from recorder.protocol import Record
from recorder.schema.accept import Accepted, Acceptor
from recorder.schema.fast import Fast, derive
from recorder.a3cp import A3CPMessage, AuditEvent, FeedbackLogEntry, RawActionRecord
from recorder.schema.config import load_config, parse_config
from recorder.schema.registry import Registry
from recorder.testing import sample_audit, sample_message, sample_raw_action

REGISTRY = Registry.from_config(load_config(None))
MAX_DEPTH = 32
FAST = {n: Acceptor(s, MAX_DEPTH, "session_end") for n, s in REGISTRY.specs.items()}
REFERENCE = {n: Acceptor(s, MAX_DEPTH, "session_end", fast=False) for n, s in REGISTRY.specs.items()}
PATHS: Counter[str] = Counter()  # which path the fast acceptor took, over the whole module


def outcome(acceptor: Acceptor, rec: Record) -> tuple[Any, ...]:
    """What one acceptor made of a frame: the stored parts, or the error's type, field and reason."""
    try:
        a: Accepted = acceptor(rec)
    except ValidationError as e:
        return ("refused", type(e).__name__, e.field, e.reason)
    return ("accepted", a.envelope, a.record, a.path_values, a.user_id, a.session_id, a.ends_session)


def agree(stype: str, raw: bytes, meta: dict[str, Any]) -> str:
    """Assert both acceptors give the same outcome for ``raw`` with ``meta``; returns it ('accepted'/'refused')."""
    rec = Record("p1", 1, stype, raw, **meta)
    before = dict(FAST[stype].counts)
    fast, ref = outcome(FAST[stype], rec), outcome(REFERENCE[stype], rec)
    assert fast == ref, f"{stype} {meta} {raw[:300]!r}"
    after = FAST[stype].counts
    PATHS.update({k: after[k] - before[k] for k in after})
    return str(fast[0])


# -- records in ASCII, the fast path's ground, mutated ----------------------------------------
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
ATEXT = st.text(ASCII, max_size=12)
AJSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | ATEXT | st.sampled_from(["", "x" * 129, "unknown", "session_end", "2025-13-01T00:00:00Z",
                               "2024-02-29T23:59:59.123456789Z", "2023-02-29T00:00:00Z", "2025-01-01T00:00:00",
                               "2025-01-01T00:00:00Z\n", "1.0.0", "1.1.0", "2.0.0", "1.0", "sha256:ab",
                               "7ce42c82-1807-4e8c-b5bf-992dc9e9c616", "7CE42C82-1807-4E8C-B5BF-992DC9E9C616\n",
                               "..", "a/b", "data:image/png;base64,AAAA", "DATA:Audio/x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ATEXT, inner, max_size=3),
    max_leaves=8,
)
TRICKY = st.sampled_from(["2025-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2025-06-15T24:00:00Z",
                          "2025-06-15T12:00:60Z", "0000-01-01T00:00:00Z", "2025-06-15T12:00:00.1234567890Z",
                          "2025-06-15T12:00:00+01:00", "2025-06-15 12:00:00Z", "2025-06-15t12:00:00z",
                          "7ce42c82-1807-4e8c-b5bf-992dc9e9c61", "7ce42c82-1807-4e8c-b5bf-992dc9e9c616x",
                          "1.0.0x", "01.0.0", "", "x" * 128, "x" * 129, -1, 0, 1, 1.0, 1.5, -0.0, 2**31, 2**31 - 1,
                          2**63, True, False, None, [], {}, {"unknown": 0.5}, {"a": 1.5, "unknown": 0.1},
                          [{"frame_index": 1, "landmarks": {}}, {"frame_index": 0, "landmarks": {}}]])
SAMPLES = {
    "a3cp_message": lambda i: sample_message(i=i),
    "raw_action": lambda i: sample_raw_action(i=i),
    "audit_event": lambda i: sample_audit(i=i),
    "feedback_log": lambda i: dict(_base(i), entry_id=_base(i)["record_id"], label_status="confirmed"),
    "base": lambda i: _base(i),
}
def _fixed() -> dict[str, list[dict[str, Any]]]:
    """The samples, made once: their ids are random, and Hypothesis replays draws over them."""
    return {stype: [make(i) for i in range(20)] for stype, make in SAMPLES.items()}


def _base(i: int) -> dict[str, Any]:
    return {k: v for k, v in sample_audit(i=i).items() if k != "event_type"}


FIXED = _fixed()
IDS = ["record_id", "schema_version", "user_id", "session_id", "source"]


def put_path(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    # a copy: a drawn constant ({} from TRICKY) edited in place later would change what the
    # strategy draws next, and a replayed example would then draw differently (FlakyStrategyDefinition)
    obj[path[-1]] = copy.deepcopy(value)


def drop_path(obj: Any, path: tuple[Any, ...]) -> None:
    for p in path[:-1]:
        obj = obj[p]
    del obj[path[-1]]


@st.composite
def mutated(draw: st.DrawFn, stype: str) -> tuple[bytes, dict[str, Any]]:
    """A sample record of ``stype`` with a few random edits, ids maybe moved to metadata, as ASCII JSON."""
    rec = json.loads(json.dumps(FIXED[stype][draw(st.integers(0, len(FIXED[stype]) - 1))]))
    for _ in range(draw(st.integers(0, 3))):
        paths = list(value_paths(rec))
        op = draw(st.sampled_from(["field", "field", "set", "drop", "add", "version"]))
        if op == "field" and rec:  # a field the model names, set to a value near its rules
            nested = [p for p in paths if isinstance(p[-1], str)]
            put_path(rec, draw(st.sampled_from(nested)), copy.deepcopy(draw(TRICKY | AJSON)))
        elif op == "set" and paths:
            put_path(rec, draw(st.sampled_from(paths)), copy.deepcopy(draw(AJSON)))
        elif op == "drop" and paths:
            drop_path(rec, draw(st.sampled_from(paths)))
        elif op == "add":
            dicts = [()] + [p for p in paths if isinstance(_at(rec, p), dict)]
            put_path(rec, (*draw(st.sampled_from(dicts)), draw(ATEXT)), copy.deepcopy(draw(AJSON)))
        else:
            rec["schema_version"] = draw(st.sampled_from(["1.0.0", "1.1.0", "1.1.7", "1.2.0", "2.0.0", "1.0"]))
    meta: dict[str, Any] = {}
    for name in IDS:
        how = draw(st.sampled_from(["keep", "keep", "move", "copy", "conflict", "empty"]))
        if how == "keep":
            continue
        value = rec.pop(name, None) if how == "move" else rec.get(name)
        meta[name] = {"conflict": "other-value", "empty": ""}.get(how, value)
        if meta[name] is None or not isinstance(meta[name], str):
            del meta[name]
    raw = json.dumps(rec, separators=(",", ":")).encode()
    shape = draw(st.sampled_from(["compact", "compact", "spaced", "dup_key", "pad"]))
    if shape == "spaced":
        raw = json.dumps(rec).encode()
    elif shape == "dup_key" and rec:
        key = draw(st.sampled_from(sorted(rec)))
        raw = b"{" + json.dumps(key).encode() + b":" + json.dumps(draw(AJSON)).encode() + b"," + raw[1:]
    elif shape == "pad":
        raw = b" \t" + raw + b"  "
    return raw, meta


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


@pytest.mark.parametrize("stype", sorted(SAMPLES))
def test_mutated_ascii_records_get_the_same_verdict_and_bytes_on_both_paths(stype: str) -> None:
    """Sample records with random edits, ids moved to metadata, repeated keys and blanks: the fast
    path accepts only what the reference accepts, stores the same bytes, and refuses with its words."""
    seen: Counter[str] = Counter()

    @settings(RUN, max_examples=examples(400))
    @given(mutated(stype))
    def one(case: tuple[bytes, dict[str, Any]]) -> None:
        seen[agree(stype, *case)] += 1

    one()
    assert seen["accepted"] and seen["refused"], seen


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_records_get_the_same_verdict_and_bytes_on_both_paths(schema: str) -> None:
    """Valid records generated from every shipped model, in every encoding the fuzz tests use."""

    @settings(RUN, max_examples=examples(150))
    @given(deliveries(schema))
    def one(case: tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]) -> None:
        payload, meta, _, _ = case
        raw = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        assert agree(stype_of(schema), raw, meta) == "accepted"

    one()


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_fuzz_mutations_get_the_same_verdict_on_both_paths(mutation: str) -> None:
    """Every mutation family of the fuzz tests, on every schema it applies to."""
    mutate, schemas = MUTATIONS[mutation]

    @settings(RUN, max_examples=examples(40))
    @given(st.data())
    def one(d: st.DataObject) -> None:
        schema = d.draw(st.sampled_from(schemas))
        case = mutate(d, stype_of(schema), d.draw(valid_records(schema)))
        if case.stype not in REGISTRY.specs:
            return  # an unknown type never reaches an acceptor
        payload = case.payload
        try:
            raw = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        except (TypeError, ValueError, UnicodeEncodeError):
            return  # not representable as JSON: refused before the accept step
        agree(case.stype, raw, case.meta)

    one()


CORPUS_FILES = sorted(CORPUS.glob("*/*.json"))


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_upstream_examples_get_the_same_verdict_on_both_paths(path: Path) -> None:
    """Each A3CP example record, as its file's bytes and compacted, with and without ids as metadata,
    against every shipped type."""
    raw = path.read_bytes()
    obj = json.loads(raw)
    compact = json.dumps(obj, separators=(",", ":")).encode()
    meta = {"record_id": "7ce42c82-1807-4e8c-b5bf-992dc9e9c616", "schema_version": "1.0.0", "user_id": "elias01"}
    for stype in REGISTRY.specs:
        for body in (raw, compact):
            agree(stype, body, {})
            agree(stype, body, {k: v for k, v in meta.items() if not isinstance(obj, dict) or k not in obj})


def test_the_common_types_take_the_fast_path() -> None:
    """Every shipped model is derived; their sample records are accepted on the fast path, with no
    disagreement."""
    for model in (A3CPMessage, RawActionRecord, AuditEvent, FeedbackLogEntry):
        assert isinstance(derive(model), Fast), derive(model)
    for stype, make in SAMPLES.items():
        acceptor = Acceptor(REGISTRY.get(stype), MAX_DEPTH, "session_end")
        for i in range(5):
            acceptor(Record("p", i + 1, stype, json.dumps(make(i), separators=(",", ":")).encode()))
        assert acceptor.counts == {"fast": 5, "reference": 0, "disagreements": 0}, (stype, acceptor.counts)


def test_a_model_outside_the_subset_takes_the_reference_path() -> None:
    """A model with a validator the fast path cannot prove is not derived: pydantic decides its records."""
    from pydantic import BaseModel, field_validator

    class Odd(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def _upper(cls, v: str) -> str:
            if not v.isupper():
                raise ValueError("must be upper case")
            return v

    why = derive(Odd)
    assert isinstance(why, str) and "_upper" in why


def test_the_module_exercised_both_paths() -> None:
    """Over this module's cases the fast path both decided records and left some to the reference."""
    if not PATHS:
        pytest.skip("run with the other tests of this module")
    print(f"\naccept paths over this module: {dict(PATHS)}")  # shown with pytest -s
    assert PATHS["fast"] > 0 and PATHS["reference"] > 0, PATHS


def test_versions_of_one_type_alternating_all_take_the_fast_path() -> None:
    """1.0 and 1.1 a3cp_message records (1.1 adds model_version) in turn each find their own model's Struct."""
    acceptor = Acceptor(REGISTRY.get("a3cp_message"), MAX_DEPTH, "session_end")
    for i in range(6):
        rec = sample_message(i=i)
        if i % 2:
            rec.update(schema_version="1.1.0", model_version="m2")
        acceptor(Record("p", i + 1, "a3cp_message", json.dumps(rec, separators=(",", ":")).encode()))
    assert acceptor.counts == {"fast": 6, "reference": 0, "disagreements": 0}, acceptor.counts


class Plain(BaseModel):
    """A producer's own model: no record_id, no schema_version, no user_id field, extra fields refused."""

    model_config = ConfigDict(extra="forbid")

    intent: str
    score: float


PLAIN_CONFIG = """
[types.plain]
model = "test_accept:Plain"
path = "plain/{user_id}.jsonl"
"""


def test_a_model_without_id_fields_takes_the_fast_path_with_ids_as_metadata() -> None:
    """Ids given as metadata go to the envelope only where the model lacks the field (even with
    extra='forbid'): both paths accept, on the fast path, with the same bytes."""
    spec = Registry.from_config(parse_config(PLAIN_CONFIG, "<plain>")).get("plain")
    fast, ref = Acceptor(spec, MAX_DEPTH, None), Acceptor(spec, MAX_DEPTH, None, fast=False)
    meta = {"record_id": "r-1", "schema_version": "1.0.0", "user_id": "u1"}
    rec = Record("p", 1, "plain", b'{"intent":"drink","score":0.5}', **meta)
    got = outcome(fast, rec)
    assert got == outcome(ref, rec) and got[0] == "accepted" and fast.counts["fast"] == 1
    wrong = Record("p", 2, "plain", b'{"intent":"drink","score":"high"}', **meta)
    got = outcome(fast, wrong)
    assert got == outcome(ref, wrong) and got[0] == "refused"
