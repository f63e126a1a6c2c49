"""Records generated from every shipped model for the hostile-input tests: strategies, value paths, deliveries."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pydantic
from hypothesis import HealthCheck, Phase, assume, event, note, settings
from hypothesis import strategies as st

from recorder.schema.config import load_config
from recorder.schema.registry import Registry

REGISTRY = Registry.from_config(load_config(None))
SCHEMAS = ["a3cp_message", "a3cp_message_1_1", "raw_action", "audit_event", "feedback_log", "base"]
DENIED = sorted(set().union(*(s.denied_fields for s in REGISTRY.specs.values())))
PREFIXES = sorted({p for s in REGISTRY.specs.values() for p in s.denied_prefixes})
SECRET = "U0VDUkVURlVaWlBBWUxPQUQ"  # stands for a raw frame's base64 payload: never in any file
LINE_BREAKS = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
# No shrinking: the Store keeps state across examples, so shrinking replays against a changed
# store and runs into the per-test timeout; the labelled draws of a failure say enough.
RUN = settings(deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.large_base_example])
#: RECORDER_FUZZ_SCALE=10 runs ten times as many examples (the default keeps the file under a minute)
SCALE = float(os.environ.get("RECORDER_FUZZ_SCALE", "1"))
OMIT: Any = object()


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


def stype_of(schema: str) -> str:
    """The registered schema type of a test schema name (``a3cp_message_1_1`` is a version of a3cp_message)."""
    return "a3cp_message" if schema == "a3cp_message_1_1" else schema


def model_for(stype: str, version: str) -> type[pydantic.BaseModel]:
    return REGISTRY.get(stype).model_for(version)


# -- strategies: values the models accept ---------------------------------------------
BREAK = st.sampled_from(LINE_BREAKS)
CHARS = st.one_of(st.characters(codec="utf-8"), st.sampled_from([c for c in LINE_BREAKS if len(c) == 1]))
TEXT = st.one_of(st.text(CHARS, max_size=24), st.tuples(st.text(CHARS, max_size=8), BREAK, st.text(CHARS, max_size=8)).map("".join))
NAME = st.one_of(st.text(CHARS, min_size=1, max_size=24), st.text(CHARS, min_size=128, max_size=128),
                 st.tuples(st.text(CHARS, max_size=8), BREAK, st.text(CHARS, max_size=8)).map("".join))
IDENT = st.one_of(st.from_regex(ID, fullmatch=True), st.from_regex(r"[A-Za-z0-9]{128}", fullmatch=True))
# `source` is not a path part in any shipped template: names that would be unsafe there are
# plain values here, stored as sent, and must not name any file.
SOURCE = st.one_of(NAME, st.sampled_from(["..", "../x", "a/b", "/etc/passwd", "_recorder", ".hidden"]))
UUIDS = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
PROB = st.floats(0.0, 1.0) | st.sampled_from([0, 1])
FLOAT = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | FLOAT | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
MINOR_1_0 = st.integers(0, 999_999).filter(lambda m: m != 1)  # 1.1.x is the A3CPMessageV1_1 model


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """An A3CP UTC timestamp: any second from year 1 to 9999, 0 to 9 fraction digits, Z or +00:00."""
    t = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
    digits = draw(st.integers(0, 9))
    frac = "." + "".join(draw(st.sampled_from("0123456789")) for _ in range(digits)) if digits else ""
    zone = draw(st.sampled_from(["Z", "+00:00"]))
    return (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
            f"{frac}{zone}")


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Left out, null, or a value."""
    return st.one_of(st.just(OMIT), st.none(), strategy)


def put(rec: dict[str, Any], key: str, value: Any) -> None:
    if value is not OMIT:
        rec[key] = value


@st.composite
def base_fields(draw: st.DrawFn, minor: st.SearchStrategy[int]) -> dict[str, Any]:
    rec = {
        "record_id": draw(UUIDS),
        "timestamp": draw(timestamps()),
        "schema_version": f"1.{draw(minor)}.{draw(st.integers(0, 999_999))}",
        "user_id": draw(IDENT),
    }
    put(rec, "session_id", draw(optional(IDENT)))
    put(rec, "modality", draw(optional(NAME)))
    put(rec, "source", draw(optional(SOURCE)))
    put(rec, "performer_id", draw(optional(NAME)))
    return rec


def extras(draw: st.DrawFn, rec: dict[str, Any], model: type[pydantic.BaseModel]) -> None:
    """Fields the model does not declare (models with extra='allow' keep them)."""
    more = draw(st.dictionaries(TEXT.filter(lambda k: k not in model.model_fields), JSON, max_size=3))
    for k, v in more.items():
        rec.setdefault(k, v)


@st.composite
def a3cp_messages(draw: st.DrawFn, v1_1: bool = False) -> dict[str, Any]:
    rec = draw(base_fields(st.just(1) if v1_1 else MINOR_1_0))
    rec["capture_id"] = draw(UUIDS)
    out = draw(optional(st.dictionaries(NAME, PROB, max_size=5)))
    if isinstance(out, dict):
        out["unknown"] = draw(PROB)
    put(rec, "classifier_output", out)
    put(rec, "raw_features_ref", draw(optional(st.fixed_dictionaries({
        "uri": st.text(CHARS, min_size=1, max_size=40) | st.text(CHARS, min_size=2048, max_size=2048),
        "hash": TEXT.map(lambda t: "sha256:" + t),
        "encoding": TEXT,
        "shape": st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=8),
        "dtype": NAME,
        "format": NAME,
    }))))
    put(rec, "annotation", draw(optional(st.dictionaries(TEXT, JSON, max_size=4))))
    if v1_1:
        put(rec, "model_version", draw(optional(NAME)))
    extras(draw, rec, model_for("a3cp_message", rec["schema_version"]))
    return rec


LANDMARK = st.fixed_dictionaries({"x": FLOAT, "y": FLOAT}, optional={"z": FLOAT, "visibility": PROB})


@st.composite
def raw_actions(draw: st.DrawFn) -> dict[str, Any]:
    rec = draw(base_fields(st.integers(0, 999_999)))
    rec["intent_label"] = draw(NAME)
    put(rec, "fps", draw(optional(st.floats(0, 1000, exclude_min=True) | st.integers(1, 1000))))
    # frame_index is bounded by the model (0..2**31-1); larger ones are refused
    # (test_raw_action_ints_beyond_int64_are_refused_or_sealed below)
    indexes = sorted(draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4, unique=True)))
    frames = []
    for i in indexes:
        frame: dict[str, Any] = {"frame_index": i}
        put(frame, "timestamp", draw(optional(timestamps())))
        frame["landmarks"] = draw(st.dictionaries(NAME, st.dictionaries(NAME, LANDMARK, max_size=3), max_size=3))
        frames.append(frame)
    rec["frames"] = frames
    return rec


@st.composite
def audit_events(draw: st.DrawFn) -> dict[str, Any]:
    rec = draw(base_fields(st.integers(0, 999_999)))
    put(rec, "event_type", draw(optional(NAME)))
    extras(draw, rec, model_for("audit_event", "1.0.0"))
    return rec


@st.composite
def feedback_entries(draw: st.DrawFn) -> dict[str, Any]:
    rec = draw(base_fields(st.integers(0, 999_999)))
    rec["entry_id"] = draw(UUIDS)
    put(rec, "intent_label", draw(optional(NAME)))
    put(rec, "label_status", draw(optional(NAME)))
    extras(draw, rec, model_for("feedback_log", "1.0.0"))
    return rec


RECORDS: dict[str, Callable[[], st.SearchStrategy[dict[str, Any]]]] = {
    "a3cp_message": a3cp_messages,
    "a3cp_message_1_1": lambda: a3cp_messages(v1_1=True),
    "raw_action": raw_actions,
    "audit_event": audit_events,
    "feedback_log": feedback_entries,
    "base": lambda: base_fields(st.integers(0, 999_999)),
}


def is_clean(obj: Any) -> bool:
    """No denied name, no denied prefix, and no session end marker (that would seal a session)."""
    if isinstance(obj, dict):
        return all(k not in DENIED and is_clean(k) and is_clean(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(is_clean(v) for v in obj)
    if isinstance(obj, str):
        return not obj[:64].lower().startswith(tuple(PREFIXES)) and obj != "session_end"
    return True


@st.composite
def valid_records(draw: st.DrawFn, schema: str) -> dict[str, Any]:
    rec = draw(RECORDS[schema]())
    order = draw(st.permutations(list(rec)))
    rec = {k: rec[k] for k in order}
    assume(is_clean(rec))
    return rec


# -- paths inside a record ---------------------------------------------------------------
Path_ = tuple[Any, ...]


def value_paths(obj: Any, at: Path_ = ()) -> Iterator[Path_]:
    """The path of every value below ``obj`` (dict keys and list indexes)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*at, k)
            yield from value_paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield (*at, i)
            yield from value_paths(v, (*at, i))


def dict_paths(obj: Any, at: Path_ = ()) -> Iterator[Path_]:
    """The path of every object (dict) in ``obj``, itself included."""
    if isinstance(obj, dict):
        yield at
        for k, v in obj.items():
            yield from dict_paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from dict_paths(v, (*at, i))


def get_at(obj: Any, path: Path_) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def set_at(obj: Any, path: Path_, value: Any) -> None:
    get_at(obj, path[:-1])[path[-1]] = value


def copy_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def top(path: Path_) -> str:
    return str(path[0]) if path else "$"



# -- valid input: what is sent, and what must read back ------------------------------------
META_FIELDS = ["record_id", "schema_version", "user_id", "session_id", "source"]
ENCODINGS = ["dict", "compact", "ascii", "pretty", "spaced", "to_limit", "big_numbers"]
BIG_NUMBERS = [str(10**400), str(-(10**400)), str(2**80), str(2**64), str(-(2**63) - 1), "1e308",
               "123456789012345678901234567890.5", "-0.0", "0.000000000000000000000000000001"]


@st.composite
def deliveries(draw: st.DrawFn, schema: str) -> tuple[dict[str, Any] | bytes, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(payload, metadata, record as it must read back, envelope fields) for one valid record."""
    stype = stype_of(schema)
    full = draw(valid_records(schema))
    how = {k: draw(st.sampled_from(["record", "meta", "both"])) for k in META_FIELDS
           if isinstance(full.get(k), str)}
    # A user_id given only as metadata is refused unless record_id or schema_version is
    # metadata too (test_user_id_as_metadata_only_is_accepted below): stay clear of it here.
    if how.get("user_id") == "meta" and "meta" not in (how.get("record_id"), how.get("schema_version")):
        how["record_id"] = "meta"
    meta = {k: full[k] for k, w in how.items() if w in ("meta", "both")}
    rec = {k: v for k, v in full.items() if how.get(k) != "meta"}
    envelope = {"schema_type": stype, "record_id": full["record_id"], "schema_version": full["schema_version"],
                "user_id": full["user_id"], "session_id": full.get("session_id"), "source": full.get("source")}
    enc = draw(st.sampled_from(ENCODINGS))
    model = model_for(stype, full["schema_version"])
    if enc == "big_numbers" and model.model_config.get("extra") != "allow":
        enc = "compact"  # no field of this model takes any JSON value
    event(f"encoding {enc}")
    note(f"encoding {enc}, metadata {sorted(meta)}")
    if enc == "dict":
        return rec, meta, rec, envelope
    if enc == "big_numbers":  # valid JSON numbers beyond float and int64 range, as raw text
        token = draw(st.sampled_from(BIG_NUMBERS))
        key = draw(TEXT.filter(lambda k: k not in model.model_fields and k not in rec and is_clean({k: 0})))
        rec = {**rec, key: "\x00BIG"}
        raw = json.dumps(rec, ensure_ascii=False).replace('"\\u0000BIG"', token).encode()
        return raw, meta, json.loads(raw), envelope
    compact = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()
    if enc == "compact":
        raw = compact
    elif enc == "ascii":
        raw = json.dumps(rec).encode()  # \uXXXX escapes, surrogate pairs for astral characters
    elif enc == "pretty":
        raw = json.dumps(rec, ensure_ascii=False, indent=draw(st.integers(0, 4))).encode()
    elif enc == "spaced":
        raw = draw(st.sampled_from([b" ", b"\t", b"\r\n", b"\n "])) + compact + draw(st.sampled_from([b" ", b"\t\n", b""]))
    else:  # padded with blanks to exactly the type's limit: the largest record accepted
        limit = REGISTRY.get(stype).config.max_record_bytes
        assume(len(compact) <= limit)
        raw = b"{" + b" " * (limit - len(compact)) + compact[1:]
        assert len(raw) == limit
    return raw, meta, json.loads(raw), envelope
