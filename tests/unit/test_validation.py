"""Validation (F1, NF4): what is accepted as sent, what is refused and why, and the quarantine."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_support import all_bytes, audit_events, corpus_bytes, journal_path, lines, quarantine

from recorder import (
    DeniedFieldError,
    RecordTooLarge,
    Store,
    UnknownSchemaError,
    UnsafeIdentifier,
    ValidationError,
    read,
    verify,
)
from recorder.schema.config import default_config_text, parse_config
from recorder.testing import invalid_samples, sample_message, sample_raw_action

SECRET = "U0VDUkVUUEFZTE9BRA"  # stands for the base64 payload of a frame; must never reach disk


def only_record(root: Path) -> dict[str, Any]:
    """The single envelope stored under ``root``."""
    got = list(read(root))
    assert len(got) == 1
    return got[0]


# -- the A3CP corpus, accepted as it is --------------------------------------------

CORPUS_CASES = [
    ("a3cp_message", "input", "a3cp_message"),
    ("a3cp_message", "output", "a3cp_message"),
    ("base", "input", "base"),
    ("base", "output", "base"),
    ("session_manager_start", "input", "audit_event"),
    ("session_manager_start", "output", "audit_event"),
    ("session_manager_end", "input", "audit_event"),
    ("session_manager_end", "output", "audit_event"),
]


@pytest.mark.parametrize(("module", "which", "schema_type"), CORPUS_CASES)
def test_corpus_example_is_accepted_and_round_trips(tmp_path: Path, module: str, which: str,
                                                     schema_type: str) -> None:
    """A corpus example, sent as its file's bytes, is stored and read back unchanged."""
    raw = corpus_bytes(module, which)
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(raw, schema_type=schema_type)
    env = only_record(root)
    sent = json.loads(raw)
    assert env["record"] == sent
    assert list(env["record"]) == list(sent)  # key order kept too
    assert env["schema_type"] == schema_type
    assert env["schema_version"] == sent["schema_version"]
    assert env["record_id"] == sent["record_id"]
    assert env["timestamp"] == sent["timestamp"]
    assert verify([root])[1] == []


@pytest.mark.parametrize("which", ["input", "output"])
def test_feedback_log_needs_a_version_and_gets_a_record_id(tmp_path: Path, which: str) -> None:
    """A feedback_log record lacks record_id and schema_version: refused without a version, stored with a
    new record_id when none is given (intended change: it was refused), a given id kept."""
    raw = corpus_bytes("feedback_log", which)
    root = tmp_path / "data"
    rid = str(uuid.UUID(int=7, version=4))
    with Store(None, data_root=root) as s:
        with pytest.raises(ValidationError) as info:
            s.record(raw, schema_type="feedback_log")
        assert info.value.field == "schema_version"
        s.record(raw, schema_type="feedback_log", schema_version="1.0.0")
        s.record(raw, schema_type="feedback_log", schema_version="1.0.0", record_id=rid)
    made, given = [e for e in lines(journal_path(root, "feedback_log", "user_xyz789", "session_abc123"))[1:]]
    assert str(uuid.UUID(made["record_id"])) == made["record_id"] != rid
    assert given["record_id"] == rid
    for env in (made, given):
        assert env["record"] == json.loads(raw)  # stored as sent: no fields added to the record
        assert env["schema_version"] == "1.0.0"
        assert env["user_id"] == "user_xyz789" and env["session_id"] == "session_abc123"


@pytest.mark.parametrize("schema_type", ["raw_action", "a3cp_message", "audit_event"])
def test_landmark_extractor_input_is_refused_as_denied_field(tmp_path: Path, schema_type: str) -> None:
    """landmark_extractor/input.json carries a data:image frame_data and is refused on that field."""
    raw = corpus_bytes("landmark_extractor", "input")
    payload = json.loads(raw)["frame_data"].split(",", 1)[1].encode()
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        with pytest.raises(DeniedFieldError) as info:
            s.record(raw, schema_type=schema_type)
    assert info.value.field == "frame_data"
    assert payload not in all_bytes(root)
    (entry,) = quarantine(root)
    assert entry["code"] == "denied_field" and entry["field"] == "frame_data"


# -- A3CP rules ----------------------------------------------------------------------

def test_classifier_output_without_unknown_is_refused(store: Store) -> None:
    """classifier_output without the 'unknown' class is refused, naming classifier_output."""
    rec = dict(sample_message(), classifier_output={"hungry": 0.9, "drink": 0.1})
    with pytest.raises(ValidationError) as info:
        store.record(rec, schema_type="a3cp_message")
    assert info.value.field == "classifier_output"
    assert "unknown" in info.value.reason


def test_classifier_output_is_optional(store: Store) -> None:
    """A message without classifier_output is accepted."""
    rec = sample_message()
    del rec["classifier_output"]
    assert store.record(rec, schema_type="a3cp_message") > 0


def test_probability_out_of_range_is_refused_naming_the_path(store: Store) -> None:
    """A probability above 1 is refused with the dotted path of the class."""
    rec = sample_message()
    rec["classifier_output"] = dict(rec["classifier_output"], hungry=1.5)
    with pytest.raises(ValidationError) as info:
        store.record(rec, schema_type="a3cp_message")
    assert info.value.field == "classifier_output.hungry"


@pytest.mark.parametrize(("schema_type", "record", "why"), invalid_samples())
def test_invalid_samples_are_refused(store: Store, schema_type: str, record: dict[str, Any], why: str) -> None:
    """Every sample from recorder.testing.invalid_samples is refused with a ValidationError."""
    with pytest.raises(ValidationError):
        store.record(record, schema_type=schema_type)


# -- versions ----------------------------------------------------------------------

def test_unknown_major_version_is_refused(store: Store) -> None:
    """A record of an unknown MAJOR version is refused as UnknownSchemaError on schema_version."""
    with pytest.raises(UnknownSchemaError) as info:
        store.record(sample_message(version="2.0.0"), schema_type="a3cp_message")
    assert info.value.field == "schema_version"
    assert "major" in info.value.reason


def test_unknown_schema_type_is_refused(store: Store) -> None:
    """A record of an unregistered type is refused as UnknownSchemaError on schema_type."""
    with pytest.raises(UnknownSchemaError) as info:
        store.record(sample_message(), schema_type="no_such_type")
    assert info.value.field == "schema_type"


@pytest.mark.parametrize("version", ["1", "1.0", "1.0.x", "", "v1.0.0", "1.0.0.0"])
def test_malformed_version_is_refused(store: Store, version: str) -> None:
    """A schema_version that is not MAJOR.MINOR.PATCH is refused on schema_version."""
    with pytest.raises(ValidationError) as info:
        store.record(sample_message(version=version), schema_type="a3cp_message")
    assert info.value.field == "schema_version"


def test_minor_version_is_accepted_and_recorded_under_its_own_version(tmp_path: Path) -> None:
    """A 1.1.x record is validated by the 1.1 model and recorded as 1.1.x, next to 1.0.x records."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=0, version="1.0.1"), schema_type="a3cp_message")
        s.record(dict(sample_message(i=1, version="1.1.2"), model_version="gc-2026.1"), schema_type="a3cp_message")
    got = list(read(root))
    assert [e["schema_version"] for e in got] == ["1.0.1", "1.1.2"]
    assert [e["record"]["schema_version"] for e in got] == ["1.0.1", "1.1.2"]
    assert got[1]["record"]["model_version"] == "gc-2026.1"


def test_minor_version_is_validated_by_its_own_model(store: Store) -> None:
    """A field the 1.1 model constrains is checked under 1.1.x but passes as an extra field under 1.0.x."""
    bad = {"model_version": ""}
    assert store.record(dict(sample_message(i=0, version="1.0.1"), **bad), schema_type="a3cp_message")
    with pytest.raises(ValidationError) as info:
        store.record(dict(sample_message(i=1, version="1.1.0"), **bad), schema_type="a3cp_message")
    assert info.value.field == "model_version"


# -- size, JSON and Unicode ----------------------------------------------------------

def test_oversize_record_is_refused(store: Store) -> None:
    """A record larger than max_record_bytes is refused as RecordTooLarge with its size and limit."""
    rec = sample_message()
    rec["annotation"]["notes"] = "x" * 70_000
    with pytest.raises(RecordTooLarge) as info:
        store.record(rec, schema_type="a3cp_message")
    assert info.value.limit == 65536 and info.value.size > 65536


def raw_message(**replace: str) -> bytes:
    """A valid a3cp_message as JSON text, with ``"annotation": ANNOTATION`` spliced in as raw JSON."""
    rec = sample_message()
    rec["annotation"] = "@@ANNOTATION@@"
    text = json.dumps(rec)
    return text.replace('"@@ANNOTATION@@"', replace.get("annotation", "null")).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(raw_message(annotation='{"v": NaN}'), "NaN", id="nan"),
        pytest.param(raw_message(annotation='{"v": Infinity}'), "Infinity", id="infinity"),
        pytest.param(raw_message(annotation='{"v": -Infinity}'), "Infinity", id="minus-infinity"),
        pytest.param(raw_message(annotation='{"v": "\\ud800"}'), "surrogate", id="lone-high-at-end"),
        pytest.param(raw_message(annotation='{"v": "\\ud800x"}'), "surrogate", id="lone-high"),
        pytest.param(raw_message(annotation='{"v": "x\\udc00"}'), "surrogate", id="lone-low"),
        pytest.param(raw_message(annotation='{"v": "\\ud800\\ud800"}'), "surrogate", id="high-high"),
        pytest.param(raw_message(annotation='{"v": "\xff"}').replace(b"\xc3\xbf", b"\xff"), "UTF-8",
                     id="invalid-utf8"),
        pytest.param(raw_message(annotation='{"v": "\xe2\x82"}').replace(b"\xc3\xa2\xc2\x82", b"\xe2\x82"),
                     "UTF-8", id="truncated-utf8"),
        pytest.param(raw_message(annotation='{"v": ' * 40 + "1" + "}" * 40), "nested", id="deep-40"),
        pytest.param(raw_message(annotation="[" * 20_000 + "]" * 20_000), "nested", id="deep-20000"),
        pytest.param(b"[1, 2]", "JSON object", id="list"),
        pytest.param(b'"text"', "JSON object", id="string"),
        pytest.param(b"42", "JSON object", id="number"),
        pytest.param(b"null", "JSON object", id="null"),
        pytest.param(b"", "JSON", id="empty"),
        pytest.param(b"{} {}", "JSON", id="trailing"),
        pytest.param(raw_message(annotation='{"v": 1e999}'), "JSON", id="overflow"),
    ],
)
def test_bad_json_is_refused_naming_the_reason(store: Store, raw: bytes, reason: str) -> None:
    """Input that is not one finite, valid-Unicode, shallow JSON object is refused with the reason."""
    with pytest.raises(ValidationError) as info:
        store.record(raw, schema_type="a3cp_message")
    assert reason in info.value.reason
    (entry,) = quarantine(Path(store.root))
    assert entry["code"] == "invalid"


def test_invalid_utf8_reason_gives_the_byte_offset(store: Store) -> None:
    """The reason for invalid UTF-8 names the offset of the bad byte in the record."""
    raw = raw_message(annotation='"@"')
    at = raw.index(b'"@"') + 1
    raw = raw[:at] + b"\xff" + raw[at + 1 :]
    with pytest.raises(ValidationError) as info:
        store.record(raw, schema_type="a3cp_message")
    assert f"at byte {at}" in info.value.reason


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_in_a_dict_is_refused(store: Store, value: float) -> None:
    """A dict record holding NaN or Infinity is refused (not silently written as null), naming the field."""
    rec = sample_message()
    rec["classifier_output"]["unknown"] = value
    with pytest.raises(ValidationError) as info:
        store.record(rec, schema_type="a3cp_message")
    assert info.value.field == "classifier_output.unknown"
    assert "NaN" in info.value.reason


def test_lone_surrogate_str_in_a_dict_is_refused(store: Store) -> None:
    """A dict record holding a str with a lone surrogate is refused as not encodable."""
    rec = sample_message()
    rec["annotation"]["notes"] = "bad \ud800 text"
    with pytest.raises(ValidationError) as info:
        store.record(rec, schema_type="a3cp_message")
    assert "surrogate" in info.value.reason


def test_depth_limit_applies_below_the_fast_path_threshold(tmp_path: Path) -> None:
    """A configured max_depth smaller than usual still refuses a record that is only a little deeper."""
    text = default_config_text().replace("max_depth = 32", "max_depth = 4")
    assert "max_depth = 4" in text
    with Store(parse_config(text, "shallow.toml"), data_root=tmp_path / "data") as s:
        rec = sample_message()
        rec["annotation"] = {"a": {"b": {"c": {"d": {}}}}}
        with pytest.raises(ValidationError) as info:
            s.record(rec, schema_type="a3cp_message")
    assert "nested" in info.value.reason


LINE_BREAKS = "\n\r\u2028\u2029\u0085\x0b\x0c\x1c\x1d\x1e"


def assert_one_line_per_record(path: Path, records: int) -> None:
    """The journal holds exactly header + ``records`` lines for every line-splitting convention."""
    data = path.read_bytes()
    assert data.count(b"\n") == records + 1
    assert len(data.decode("utf-8").splitlines()) == records + 1
    for raw in (b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xc2\x85", b"\r"):
        assert raw not in data


def test_line_break_characters_never_split_a_line(tmp_path: Path) -> None:
    """Newlines, CR, U+2028, U+2029, U+0085 and other separators in strings stay inside one line and round-trip."""
    root = tmp_path / "data"
    text = "a" + "b".join(LINE_BREAKS) + "z"
    rec = sample_message()
    rec["annotation"]["notes"] = text
    rec["annotation"][text] = text  # in a key too
    # Raw JSON may hold U+2028/U+2029/U+0085 unescaped: send those bytes as they are.
    raw = json.dumps(dict(sample_message(i=1), annotation={"n": "x\u2028y\u2029z\u0085"}),
                     ensure_ascii=False).encode()
    assert b"\xe2\x80\xa8" in raw
    with Store(None, data_root=root) as s:
        s.record(rec, schema_type="a3cp_message", tags={"note": text})
        s.record(raw, schema_type="a3cp_message")
    assert_one_line_per_record(journal_path(root), 2)
    got = list(read(root))
    assert got[0]["record"] == rec and got[0]["tags"] == {"note": text}
    assert got[1]["record"] == json.loads(raw)
    assert verify([root])[1] == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(LINE_BREAKS) | st.characters(codec="utf-8"), max_size=40))
def test_any_text_round_trips_on_one_line(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """Any valid Unicode text in a record is stored on one line and read back exactly."""
    root = tmp_path_factory.mktemp("text") / "data"
    rec = sample_message()
    rec["annotation"] = {"notes": text, text: [text]}
    with Store(None, data_root=root) as s:
        s.record(rec, schema_type="a3cp_message")
    assert_one_line_per_record(journal_path(root), 1)
    assert only_record(root)["record"] == rec


def test_stored_values_are_what_the_producer_sent(tmp_path: Path) -> None:
    """Values are stored as sent, not re-formatted by the model (...56.789Z stays ...56.789Z)."""
    root = tmp_path / "data"
    rec = sample_message()
    rec["timestamp"] = "2025-06-15T12:34:56.789Z"
    rec["annotation"] = {"when": "2025-06-15T12:34:56Z", "n": 1, "x": 0.5, "big": 12345678901234567890}
    raw = json.dumps(rec, indent=2).encode()  # pretty-printed, as a producer might send it
    with Store(None, data_root=root) as s:
        s.record(raw, schema_type="a3cp_message")
    env = only_record(root)
    assert env["record"] == rec
    assert env["timestamp"] == "2025-06-15T12:34:56.789Z"
    assert b'"timestamp":"2025-06-15T12:34:56.789Z"' in journal_path(root).read_bytes()


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("user_id", "someone_else"),
        ("session_id", "other_session"),
        ("schema_version", "1.0.2"),
        ("record_id", str(uuid.UUID(int=1, version=4))),
        ("source", "somewhere"),
    ],
)
def test_metadata_conflicting_with_the_record_is_refused(store: Store, field: str, other: str) -> None:
    """Metadata that disagrees with the same field in the record is refused, naming the field."""
    with pytest.raises(ValidationError) as info:
        meta: dict[str, Any] = {field: other}
        store.record(sample_message(), schema_type="a3cp_message", **meta)
    assert info.value.field == field


def test_metadata_agreeing_with_the_record_is_accepted(store: Store) -> None:
    """Metadata equal to the record's own fields is accepted."""
    rec = sample_message()
    fields: dict[str, Any] = {k: rec[k] for k in ("user_id", "session_id", "schema_version", "record_id", "source")}
    assert store.record(rec, schema_type="a3cp_message", **fields) > 0


def test_envelope_carries_metadata(tmp_path: Path) -> None:
    """The stored envelope carries ids, version, source, action_id, tags, producer and sequence numbers."""
    root = tmp_path / "data"
    rec = sample_message()
    with Store(None, data_root=root) as s:
        seq = s.record(rec, schema_type="a3cp_message", action_id="act-1", tags={"site": "lab"},
                       producer="cam-1", pseq=41)
    env = only_record(root)
    assert env["seq"] == seq
    assert env["producer"] == "cam-1" and env["pseq"] == 41
    assert env["action_id"] == "act-1" and env["tags"] == {"site": "lab"}
    assert env["source"] == "gesture_classifier"
    assert env["received"].endswith("Z")
    header = lines(journal_path(root))[0]
    assert header["recorder_journal"] == 1 and header["hash"] == "sha256"
    assert {"host", "pid", "python", "packages", "config_digest"} <= set(header["env"])


# -- denied fields and the quarantine ---------------------------------------------

def denied_cases() -> list[Any]:
    """Records carrying a denied field or value, in several disguises."""
    good = json.dumps(sample_message())[:-1]
    return [
        pytest.param(good + f', "frame_data": "{SECRET}"}}', "frame_data", id="field"),
        pytest.param(good + f', "annotation2": {{"audio_data": "{SECRET}"}}}}', "annotation2.audio_data",
                     id="nested-field"),
        pytest.param(good + f', "thumb": "data:image/png;base64,{SECRET}"}}', "thumb", id="prefix"),
        pytest.param(good + f', "clips": ["ok", "data:audio/wav;base64,{SECRET}"]}}', "clips[1]",
                     id="prefix-in-list"),
        pytest.param(good + f', "frame\\u005fdata": "{SECRET}"}}', "frame_data", id="escaped-name"),
        pytest.param(good + f', "thumb": "data\\u003aimage/png;base64,{SECRET}"}}', "thumb", id="escaped-prefix"),
    ]


@pytest.mark.parametrize(("raw", "field"), denied_cases())
def test_denied_field_is_refused_and_never_reaches_disk(tmp_path: Path, raw: str, field: str) -> None:
    """A denied field or value is refused naming it, quarantined by name, size and hash, and its bytes are nowhere."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=1), schema_type="a3cp_message")
        with pytest.raises(DeniedFieldError) as info:
            s.record(raw.encode(), schema_type="a3cp_message", producer="cam-1", pseq=9)
    assert info.value.field == field
    (entry,) = quarantine(root)
    assert entry["code"] == "denied_field"
    assert entry["field"] == field
    assert field in entry["reason"]
    assert entry["producer"] == "cam-1" and entry["pseq"] == 9 and entry["origin"] == "in-process"
    assert entry["size"] == len(raw.encode()) and entry["sha256"].startswith("sha256:")
    assert SECRET.encode() not in all_bytes(root)
    assert len(list(read(root))) == 1


def test_denied_field_in_unparseable_input_is_not_copied(tmp_path: Path) -> None:
    """Input that is not JSON but mentions a denied field keeps no bytes in the quarantine."""
    root = tmp_path / "data"
    raw = f'{{"frame_data": "{SECRET}", oops'.encode()
    with Store(None, data_root=root) as s:
        with pytest.raises(ValidationError):
            s.record(raw, schema_type="a3cp_message")
    (entry,) = quarantine(root)
    assert entry["excerpt"] is None and entry["size"] == len(raw)
    assert SECRET.encode() not in all_bytes(root)


def test_denied_field_of_an_unknown_type_never_reaches_the_quarantine(tmp_path: Path) -> None:
    """A record of an unregistered type that carries a denied field keeps that field's value out of the quarantine."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        with pytest.raises(UnknownSchemaError):
            s.record(dict(sample_message(), frame_data=SECRET), schema_type="no_such_type")
    assert len(quarantine(root)) == 1
    assert SECRET.encode() not in all_bytes(root)


def test_quarantine_keeps_a_bounded_copy_with_reason(tmp_path: Path) -> None:
    """A refused record is quarantined with code, field, reason and a copy bounded to quarantine_copy_bytes."""
    root = tmp_path / "data"
    rec = dict(sample_message(), classifier_output={"hungry": 1.0})
    rec["annotation"]["notes"] = "y" * 10_000
    with Store(None, data_root=root) as s:
        with pytest.raises(ValidationError):
            s.record(rec, schema_type="a3cp_message")
        limit = s.config.recorder.quarantine_copy_bytes
    (entry,) = quarantine(root)
    assert entry["code"] == "invalid" and entry["field"] == "classifier_output"
    assert "unknown" in entry["reason"]
    assert entry["schema_type"] == "a3cp_message"
    assert 0 < len(entry["excerpt"]) <= limit
    assert entry["excerpt"].startswith('{"record_id":"')


def test_rejection_leaves_recorded_data_untouched(tmp_path: Path) -> None:
    """A refused record changes no byte of what was already recorded."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=1), schema_type="a3cp_message")
        before = journal_path(root).read_bytes()
        for stype, rec, _why in invalid_samples():
            with pytest.raises(ValidationError):
                s.record(rec, schema_type=stype)
        assert journal_path(root).read_bytes() == before
    assert len(quarantine(root)) == len(invalid_samples())
    assert verify([root])[1] == []


def test_quarantine_is_bounded_and_counts_drops(tmp_path: Path) -> None:
    """Past quarantine_max_bytes, rejected input is dropped, counted and the count is reported."""
    text = default_config_text().replace("quarantine_max_bytes = 67108864", "quarantine_max_bytes = 4096")
    assert "quarantine_max_bytes = 4096" in text
    root = tmp_path / "data"
    with Store(parse_config(text, "small.toml"), data_root=root) as s:
        for i in range(20):
            with pytest.raises(ValidationError):
                s.record(dict(sample_message(i=i), user_id="../x"), schema_type="a3cp_message")
        dropped = s.quarantine.dropped
    assert dropped > 0
    assert len(quarantine(root)) + dropped == 20
    assert (root / "_recorder" / "quarantine.jsonl").stat().st_size <= 4096
    stop = audit_events(root)[-1]["record"]
    assert stop["event_type"] == "recorder_stop" and stop["quarantine_dropped"] == dropped


@pytest.mark.parametrize("field", ["user_id", "session_id"])
def test_an_empty_identifier_as_metadata_is_refused_as_empty(store: Store, field: str) -> None:
    """An identifier given as "" is refused naming the field and saying it is empty (not stored as
    "no session", not called missing), and quarantined."""
    rec = sample_message()
    rec.pop(field)
    with pytest.raises(UnsafeIdentifier) as info:
        store.record(rec, schema_type="a3cp_message", **{field: ""})
    assert info.value.field == field and "empty" in info.value.reason
    (entry,) = quarantine(Path(store.root))
    assert entry["field"] == field
    assert not list(Path(store.root).rglob("none"))


def test_a_deeply_nested_record_is_stored_as_sent(store: Store) -> None:
    """A landmark sequence (more than 24 brackets, well within max_depth) is stored byte for byte as
    sent, blanks and key order included, like any other record: nesting alone is no reason to
    re-encode it (0.1.1 re-encoded it)."""
    raw = json.dumps(sample_raw_action(i=3)).encode()  # ", " and ": " separators
    assert raw.count(b"{") + raw.count(b"[") > 24
    store.record(raw, schema_type="raw_action")
    (journal,) = Path(store.root).rglob("raw_action_*.jsonl")
    line = journal.read_bytes().splitlines()[1]
    assert line.split(b',"record":', 1)[1].startswith(raw + b',"commit":true')
