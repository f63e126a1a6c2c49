"""Mutations of valid records for the hostile-input tests: each makes a record the recorder must refuse."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from fuzz_support import (
    CHARS,
    DENIED,
    ID,
    IDENT,
    NAME,
    PREFIXES,
    PROB,
    REGISTRY,
    SCHEMAS,
    SECRET,
    TEXT,
    UUIDS,
    dict_paths,
    get_at,
    model_for,
    set_at,
    top,
    value_paths,
)
from hypothesis import assume
from hypothesis import strategies as st

from recorder import DeniedFieldError, RecordTooLarge, UnknownSchemaError, UnsafeIdentifier, ValidationError


@dataclass
class Case:
    """One invalid input and what its refusal must say."""

    stype: str
    payload: dict[str, Any] | bytes
    meta: dict[str, Any] = field(default_factory=dict)
    want: type[ValidationError] = ValidationError
    field: str | None = None


def model_rejects(stype: str, rec: dict[str, Any]) -> bool:
    try:
        model_for(stype, rec["schema_version"]).model_validate(rec)
    except pydantic.ValidationError:
        return True
    return False


def required_fields(stype: str, rec: dict[str, Any]) -> list[str]:
    # record_id is left out: a record without one gets a new id from the Store (and the Client)
    model = model_for(stype, rec["schema_version"])
    return [n for n, f in model.model_fields.items() if f.is_required() and n != "record_id"]


WRONG = [[], {}, [0], {"k": 0}, 12345, -1.5, "wrong \u2603", True, None]


def m_drop_required(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A required field left out, at the top or inside a nested object."""
    if d.draw(st.booleans(), label="nested"):
        paths = [p for p in value_paths(rec) if len(p) > 1 and isinstance(p[-1], str)]
        if paths:
            path = d.draw(st.sampled_from(paths), label="path")
            del get_at(rec, path[:-1])[path[-1]]
            if model_rejects(stype, rec):
                return Case(stype, rec, field=top(path))
    name = d.draw(st.sampled_from(required_fields(stype, rec)), label="required")
    rec.pop(name, None)
    return Case(stype, rec, field=name)


def m_wrong_type(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A value of the wrong type anywhere the model declares one (a required field as the fallback)."""
    path = d.draw(st.sampled_from(list(value_paths(rec))), label="path")
    old = get_at(rec, path)
    wrong = d.draw(st.sampled_from(WRONG), label="wrong")
    set_at(rec, path, wrong)
    # a null record_id counts as none: the Store makes one
    if path[0] != "schema_version" and not (path == ("record_id",) and wrong is None) \
            and model_rejects(stype, rec):
        return Case(stype, rec, field=top(path))
    set_at(rec, path, old)
    name = d.draw(st.sampled_from(required_fields(stype, rec)), label="required")
    rec[name] = d.draw(st.sampled_from([[], {}, [1], {"a": 1}]), label="wrong")
    return Case(stype, rec, field=name)


OUT_OF_RANGE = st.one_of(
    st.floats(max_value=0.0, exclude_max=True, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1.0, exclude_min=True, allow_nan=False, allow_infinity=False),
    st.integers(2, 2**64 - 1), st.integers(-(2**63), -1),
).filter(lambda v: not 0 <= v <= 1)


def m_out_of_range(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A probability (classifier score, landmark visibility) outside [0, 1], or fps outside (0, 1000]."""
    bad = d.draw(OUT_OF_RANGE, label="value")
    if stype == "raw_action":
        if d.draw(st.booleans(), label="fps"):
            rec["fps"] = d.draw(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False)
                                | st.floats(min_value=1000.0, exclude_min=True, allow_nan=False, allow_infinity=False)
                                | st.integers(1001, 2**64 - 1), label="fps value")
            return Case(stype, rec, field="fps")
        frame = d.draw(st.sampled_from(rec["frames"]), label="frame")
        frame["landmarks"].setdefault("pose", {}).setdefault("nose", {"x": 0.5, "y": 0.5})
        group = d.draw(st.sampled_from(sorted(frame["landmarks"])), label="group")
        if not frame["landmarks"][group]:
            frame["landmarks"][group]["nose"] = {"x": 0.5, "y": 0.5}
        point = d.draw(st.sampled_from(sorted(frame["landmarks"][group])), label="point")
        frame["landmarks"][group][point]["visibility"] = bad
        return Case(stype, rec, field="frames")
    out = rec.get("classifier_output") or {"unknown": 0.5}
    key = d.draw(st.sampled_from(sorted(out)), label="key")
    rec["classifier_output"] = {**out, key: bad}
    return Case(stype, rec, field="classifier_output")


def m_no_unknown(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """classifier_output without the 'unknown' class (also empty)."""
    rec["classifier_output"] = d.draw(st.dictionaries(NAME.filter(lambda k: k != "unknown"), PROB, max_size=4))
    return Case(stype, rec, field="classifier_output")


BAD_UUIDS = st.one_of(
    st.uuids().map(str).flatmap(lambda u: st.sampled_from([
        u[:-1], u + "0", u.replace("-", ""), "{" + u + "}", u + "\n", " " + u, u + " ", "urn:uuid:" + u,
        u[:9] + "g" + u[10:], u.replace("-", "_"), u[:8] + "-" + u[9:].replace("-", "", 1),
        u.translate(str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")),
    ])),
    st.text(CHARS, max_size=40).filter(lambda t: not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", t)),
    st.sampled_from([0, 12345678901234567890, [], {}]),
)


def m_bad_uuid(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """record_id, capture_id or entry_id that is not a UUID."""
    name = d.draw(st.sampled_from([k for k in ("record_id", "capture_id", "entry_id") if k in rec]), label="field")
    rec[name] = d.draw(BAD_UUIDS, label="uuid")
    return Case(stype, rec, field=name)


BAD_TIMESTAMPS = st.one_of(
    st.sampled_from([
        "2025-06-15T12:34:56", "2025-06-15T12:34:56.789", "2025-06-15T12:34:56+01:00", "2025-06-15T12:34:56-00:00",
        "2025-06-15 12:34:56Z", "2025-06-15", "2025-13-01T00:00:00Z", "2025-02-30T00:00:00Z",
        "2025-06-15T24:00:00Z", "2025-06-15T23:59:60Z", "2025-06-15T12:34:56Z\n", "2025-06-15T12:34:56z",
        "2025-06-15T12:34:56.1234567890Z", "2025-06-15T12:34:56+0000", "0000-01-01T00:00:00Z",
        "\u0662\u0660\u0662\u0665-06-15T12:34:56Z", "+2025-06-15T12:34:56Z", "", "now", "1718454896",
        True, [], {},
    ]),
    st.text(CHARS, max_size=30).filter(
        lambda t: not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|\+00:00)", t)),
)


def m_bad_timestamp(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A timestamp that is naive, offset, malformed or impossible (numbers left out: see the xfail below)."""
    value = d.draw(BAD_TIMESTAMPS, label="timestamp")
    if stype == "raw_action" and d.draw(st.booleans(), label="in a frame"):
        d.draw(st.sampled_from(rec["frames"]), label="frame")["timestamp"] = value
        return Case(stype, rec, field="frames")
    rec["timestamp"] = value
    return Case(stype, rec, field="timestamp")


BAD_VERSIONS: st.SearchStrategy[Any] = st.sampled_from(["1", "1.0", "01.0.0", "1.00.0", "1.0.0.0", "1.0.x", "", "v1.0.0", "1.0.0\n",
                                "\u0661.0.0", "1.-1.0", " 1.0.0", "1.0.1234567", 1, 1.0, [], None])


def m_bad_version(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A schema_version that is malformed, not MAJOR.MINOR.PATCH, or of an unknown major version."""
    if d.draw(st.booleans(), label="unknown major"):
        rec["schema_version"] = f"{d.draw(st.integers(2, 999_999))}.0.0"
        return Case(stype, rec, want=UnknownSchemaError, field="schema_version")
    rec["schema_version"] = d.draw(BAD_VERSIONS, label="version")
    return Case(stype, rec, field="schema_version")


PLACEHOLDER = "\x00HOSTILE"


def with_token(d: st.DataObject, rec: dict[str, Any], token: bytes) -> bytes:
    """The record's JSON with ``token`` (raw bytes) in place of one of its values."""
    path = d.draw(st.sampled_from(list(value_paths(rec))), label="at")
    set_at(rec, path, PLACEHOLDER)
    raw = json.dumps(rec, ensure_ascii=d.draw(st.booleans(), label="ascii")).encode()
    assert raw.count(b'"\\u0000HOSTILE"') == 1
    return raw.replace(b'"\\u0000HOSTILE"', token)


RAW_TOKENS = st.sampled_from([
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"1e400", b"-1e400", b"1E+999",
    b'"\\ud800"', b'"x\\udbff"', b'"\\udc00x"', b'"\\ud800\\ud800"', b'"\\udfff\\ud800"', b'"a\\udbffb"',
    b'"\xed\xa0\x80"', b'"\xed\xbf\xbf"', b'"\xff"', b'"\xc0\xaf"', b'"\xe2\x80"', b'"\xf4\x90\x80\x80"',
    b'"a\x01b"', b'"a\nb"', b'"a\tb"', b"'single'", b"undefined", b"0x10", b"01", b"+1", b".5", b"1.",
    b'{"a":1,}', b"[1,]", b'{"a"}', b"tru", b'"unterminated',
])


def m_raw_token(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """Raw JSON text that is not JSON: NaN/Infinity, 1e400, lone surrogates, bad UTF-8, raw control characters."""
    return Case(stype, with_token(d, rec, d.draw(RAW_TOKENS, label="token")), field="$")


def m_deep(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """Nesting far deeper than max_depth (up to where the decoder itself gives up)."""
    n = d.draw(st.sampled_from([33, 40, 100, 1000, 5000, 100_000]) | st.integers(33, 3000), label="depth")
    kind = d.draw(st.sampled_from(["list", "object", "mixed"]), label="kind")
    opener, closer = {"list": (b"[", b"]"), "object": (b'{"a":', b"}"), "mixed": (b'[{"a":', b"}]")}[kind]
    return Case(stype, with_token(d, rec, opener * n + b"0" + closer * n))


def m_oversize(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A record over its type's max_record_bytes (padded with blanks or with a long string)."""
    limit = REGISTRY.get(stype).config.max_record_bytes
    compact = json.dumps(rec, separators=(",", ":")).encode()
    over = d.draw(st.integers(1, 3000) | st.sampled_from([1, limit]), label="over")
    need = max(0, limit + over - len(compact))
    if d.draw(st.booleans(), label="blanks"):
        raw = b"{" + d.draw(st.sampled_from([b" ", b"\n", b"\t"]), label="blank") * need + compact[1:]
    else:
        path = d.draw(st.sampled_from(list(value_paths(rec))), label="at")
        set_at(rec, path, "")
        set_at(rec, path, "x" * (limit + over - len(json.dumps(rec, separators=(",", ":")).encode())))
        raw = json.dumps(rec, separators=(",", ":")).encode()
    assert len(raw) > limit
    return Case(stype, raw, want=RecordTooLarge, field="$")


BAD_IDS = st.one_of(
    st.sampled_from(["..", ".", "../x", "../../etc/passwd", "a/b", "/abs", "\x00", "a\x00b", "x" * 129, "x" * 5000,
                     "_recorder", ".hidden", "-rf", "a\\b", "~", "\u00fc", "a b", "a\nb", "", " ", "a/../b", "\u2028",
                     "..\u2215x", "\uff0e\uff0e", "x\r", 0, None]),
    st.text(CHARS, max_size=140).filter(lambda t: not re.fullmatch(ID, t)),
)


def m_bad_identifier(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A user_id or session_id that would escape or confuse the path, in the record or as metadata."""
    name = d.draw(st.sampled_from(["user_id", "session_id"]), label="field")
    value = d.draw(BAD_IDS, label="value")
    where = d.draw(st.sampled_from(["record", "meta", "both"]), label="where")
    if name == "session_id" and value is None:
        value = ".."  # a null session is simply no session
    meta: dict[str, Any] = {}
    if where in ("meta", "both"):
        if not isinstance(value, str):
            value = "../x"  # metadata is typed: str only
        meta[name] = value
    if where == "meta":
        rec.pop(name, None)
    else:
        rec[name] = value
    want: type[ValidationError] = ValidationError
    if where == "record" and isinstance(value, str) and 1 <= len(value) <= 128:
        want = UnsafeIdentifier  # the model takes it as a name; only the path check refuses it
    return Case(stype, rec, meta, want=want, field=name)


def random_case(d: st.DataObject, text: str) -> str:
    return "".join(c.upper() if d.draw(st.booleans(), label="case") else c.lower() for c in text)


def escaped(d: st.DataObject, text: str) -> str:
    """``text`` as JSON string content with at least one character as a \\u escape."""
    at = d.draw(st.integers(0, len(text) - 1), label="escape at")
    return "".join(f"\\u{ord(c):04x}" if i == at or d.draw(st.booleans(), label="esc") else c
                   for i, c in enumerate(text))


def m_denied_field(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A denied field (frame_data, pcm, ...) in any object of the record, possibly spelled with \\u escapes."""
    name = d.draw(st.sampled_from(DENIED), label="name")
    at = d.draw(st.sampled_from(list(dict_paths(rec))), label="in")
    value = d.draw(st.sampled_from([SECRET, "data:image/jpeg;base64," + SECRET, [SECRET], {"b64": SECRET}, None, 0]))
    get_at(rec, at)[PLACEHOLDER] = value
    raw = json.dumps(rec).encode()
    key = escaped(d, name) if d.draw(st.booleans(), label="escape") else name
    raw = raw.replace(b'"\\u0000HOSTILE"', b'"' + key.encode() + b'"')
    return Case(stype, raw, want=DeniedFieldError, field=None)


def m_denied_value(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A data:image/audio/video URL, in any letter case, as any value of the record (possibly \\u-escaped)."""
    prefix = random_case(d, d.draw(st.sampled_from(PREFIXES), label="prefix"))
    value = prefix + d.draw(st.sampled_from(["png;base64,", "jpeg;base64,", "wav;base64,", ""])) + SECRET
    path = d.draw(st.sampled_from(list(value_paths(rec))), label="at")
    set_at(rec, path, PLACEHOLDER)
    raw = json.dumps(rec).encode()
    text = escaped(d, value[:11]) + value[11:] if d.draw(st.booleans(), label="escape") else value
    raw = raw.replace(b'"\\u0000HOSTILE"', b'"' + text.encode() + b'"')
    return Case(stype, raw, want=DeniedFieldError, field=None)


def m_not_a_record(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """Bytes that are not one JSON object: empty, scalars, arrays, cut short, or random."""
    compact = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()
    kind = d.draw(st.sampled_from(["fixed", "cut", "random"]), label="kind")
    if kind == "fixed":
        raw = d.draw(st.sampled_from([b"", b" ", b"null", b"[]", b"[1,2]", b'"x"', b"1", b"true", b"{", b"}",
                                      b"\xef\xbb\xbf{}", b"\x00", compact + compact, b"[" + compact + b"]"]))
        return Case(stype, raw, field="$")
    if kind == "cut":
        return Case(stype, compact[: d.draw(st.integers(0, len(compact) - 1), label="cut")], field="$")
    raw = d.draw(st.binary(max_size=200), label="bytes")
    return Case(stype, raw, field=None)


def m_meta_conflict(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """Metadata that contradicts the record (record_id, schema_version, user_id, session_id)."""
    name = d.draw(st.sampled_from(["record_id", "schema_version", "user_id", "session_id"]), label="field")
    if name == "session_id" and not isinstance(rec.get("session_id"), str):
        rec["session_id"] = "s1"
    other = {"record_id": d.draw(UUIDS), "schema_version": "1.2.3", "user_id": d.draw(IDENT),
             "session_id": d.draw(IDENT)}[name]
    assume(other != rec[name])
    return Case(stype, rec, {name: other}, field=name)


def m_unknown_type(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """A schema type that is not registered (including path-like names)."""
    t = d.draw(st.sampled_from(["../a3cp_message", "", "_recorder", "A3CP_MESSAGE", "a3cp_message ", "\x00",
                                "logs/users", "x" * 1000]) | TEXT, label="type")
    # "" is refused but never quarantined: test_empty_schema_type_is_quarantined below
    assume(t not in REGISTRY.specs and t != "")
    return Case(t, rec, want=UnknownSchemaError, field="schema_type")


def m_python_values(d: st.DataObject, stype: str, rec: dict[str, Any]) -> Case:
    """In-process dicts holding NaN, +-Infinity or a lone surrogate, which JSON cannot hold."""
    path = d.draw(st.sampled_from(list(value_paths(rec))), label="at")
    set_at(rec, path, d.draw(st.sampled_from([float("nan"), float("inf"), float("-inf"), "\ud800", "a\udfffb",
                                              ["\udc00"], {"k": float("nan")}]), label="value"))
    return Case(stype, rec)


MUTATIONS: dict[str, tuple[Callable[[st.DataObject, str, dict[str, Any]], Case], list[str]]] = {
    "drop_required": (m_drop_required, SCHEMAS),
    "wrong_type": (m_wrong_type, SCHEMAS),
    "out_of_range": (m_out_of_range, ["a3cp_message", "a3cp_message_1_1", "raw_action"]),
    "no_unknown_class": (m_no_unknown, ["a3cp_message", "a3cp_message_1_1"]),
    "bad_uuid": (m_bad_uuid, SCHEMAS),
    "bad_timestamp": (m_bad_timestamp, SCHEMAS),
    "bad_version": (m_bad_version, SCHEMAS),
    "raw_token": (m_raw_token, SCHEMAS),
    "deep_nesting": (m_deep, SCHEMAS),
    "oversize": (m_oversize, SCHEMAS),
    "path_identifier": (m_bad_identifier, SCHEMAS),
    "denied_field": (m_denied_field, SCHEMAS),
    "denied_value": (m_denied_value, SCHEMAS),
    "not_a_record": (m_not_a_record, SCHEMAS),
    "meta_conflict": (m_meta_conflict, SCHEMAS),
    "unknown_type": (m_unknown_type, SCHEMAS),
    "python_values": (m_python_values, SCHEMAS),
}

