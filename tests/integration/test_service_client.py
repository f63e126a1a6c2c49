"""The Client against real recorder processes: backpressure and rejections coming back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recorder import Client
from recorder.exceptions import RecorderUnavailable, RecordTooLarge, RejectedError
from recorder.testing import invalid_samples, sample_message

from .service_support import Procs, assert_verified, by_producer, journal_lines

# (code, field) the recorder answers for each of recorder.testing.invalid_samples()
EXPECTED_REJECTIONS = {
    "classifier_output lacks 'unknown'": ("invalid", "classifier_output"),
    "unknown major version": ("unknown_schema", "schema_version"),
    "denied field": ("denied_field", "frame_data"),
    "unsafe identifier": ("unsafe_identifier", "user_id"),
    "timestamp not UTC ISO-8601": ("invalid", "timestamp"),
    "unknown schema type": ("unknown_schema", "schema_type"),
}


def test_backpressure_without_a_recorder_then_late_delivery(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """With no recorder, a full buffer raises at once or after the timeout, flush raises, and a late recorder gets all."""
    eager = clients(data_root, max_pending=10, block=False)
    t0 = time.monotonic()
    for i in range(10):
        assert eager.record(sample_message("user01", "sess01", i), schema_type="a3cp_message") == i + 1
    with pytest.raises(RecorderUnavailable):
        eager.record(sample_message("user01", "sess01", 10), schema_type="a3cp_message")
    assert time.monotonic() - t0 < 2.0, "record() must not wait for a recorder when block=False"
    assert eager.pending == 10 and eager.counters["blocked"] == 1

    patient = clients(data_root, max_pending=10, block=True, timeout=0.5, user_id="user02")
    for i in range(10):
        patient.record(sample_message("user02", "sess01", i), schema_type="a3cp_message")
    t0 = time.monotonic()
    with pytest.raises(RecorderUnavailable):
        patient.record(sample_message("user02", "sess01", 10), schema_type="a3cp_message")
    waited = time.monotonic() - t0
    assert 0.45 <= waited < 2.0, f"blocked {waited:.2f} s for a 0.5 s timeout"

    t0 = time.monotonic()
    with pytest.raises(RecorderUnavailable):
        eager.flush(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 2.0
    assert not data_root.exists(), "nothing may be written without a recorder"

    procs.supervisor(data_root)
    eager.flush(timeout=20)
    patient.flush(timeout=20)
    assert eager.pending == patient.pending == 0
    # A refused record took no sequence number: the next one is #11.
    assert eager.record(sample_message("user01", "sess01", 10), schema_type="a3cp_message", wait=True) == 11
    disk = by_producer(data_root)
    assert disk[eager.producer] == list(range(1, 12))
    assert disk[patient.producer] == list(range(1, 11))


def test_rejections_come_back_typed_and_are_quarantined(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """Each invalid record sent with wait=True raises RejectedError naming code and field, and lands in quarantine."""
    procs.supervisor(data_root)
    c = clients(data_root, timeout=20)
    assert c.record(sample_message("user01", "sess01", 0), schema_type="a3cp_message", wait=True) == 1
    got: dict[int, tuple[str, str, str]] = {}
    for stype, rec, why in invalid_samples("user01", "sess01"):
        with pytest.raises(RejectedError) as ei:
            c.record(rec, schema_type=stype, wait=True)
        [(pseq, code, field, reason)] = ei.value.rejections
        assert (code, field) == EXPECTED_REJECTIONS[why], (why, code, field, reason)
        assert reason and field in str(ei.value)
        got[pseq] = (code, field, why)
    assert sorted(got) == list(range(2, 2 + len(EXPECTED_REJECTIONS)))
    # Rejections do not stall the producer: the watermark passes them.
    assert c.record(sample_message("user01", "sess01", 1), schema_type="a3cp_message", wait=True) == 8
    c.flush(timeout=10)  # nothing refused is left unreported
    assert c.counters["rejected"] == len(EXPECTED_REJECTIONS)
    assert by_producer(data_root)[c.producer] == [1, 8]

    quarantined = [o for o in journal_lines(data_root / "_recorder" / "quarantine.jsonl")[1:]
                   if o.get("producer") == c.producer]
    assert {o["pseq"]: (o["code"], o["field"]) for o in quarantined} == {p: g[:2] for p, g in got.items()}
    for o in quarantined:
        assert o["origin"] == "wire" and o["reason"]
    assert_verified(data_root)


@pytest.mark.parametrize("field", ["user_id", "session_id"])
def test_an_empty_identifier_through_the_client_is_refused_as_empty(
        procs: Procs, data_root: Path, clients: Callable[..., Client], field: str) -> None:
    """A record whose user_id or session_id is given as "" is refused as empty, as Store refuses it:
    not stored under sessions/none/, not called missing."""
    procs.supervisor(data_root)
    c = clients(data_root, timeout=20)
    rec = sample_message("user01", "sess01", 0)
    rec.pop(field)
    with pytest.raises(RejectedError) as ei:
        c.record(rec, schema_type="a3cp_message", wait=True, **{field: ""})
    [(_, code, got_field, reason)] = ei.value.rejections
    assert (code, got_field) == ("unsafe_identifier", field) and "empty" in reason
    assert c.producer not in by_producer(data_root)


def test_oversize_records_are_refused_typed_not_disconnected(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """A record over the wire limit is refused in the client; one over its type's limit comes back as too_large."""
    procs.supervisor(data_root)
    c = clients(data_root, timeout=20)
    huge = sample_message("user01", "sess01", 0)
    huge["annotation"] = dict(huge["annotation"], notes="x" * (2 << 20))
    with pytest.raises(RecordTooLarge) as ei:
        c.record(huge, schema_type="a3cp_message")
    assert ei.value.limit == 1 << 20 and c.counters["sent"] == 0
    big = sample_message("user01", "sess01", 1)
    big["annotation"] = dict(big["annotation"], notes="x" * 100_000)  # a3cp_message allows 64 KiB
    with pytest.raises(RejectedError) as rj:
        c.record(big, schema_type="a3cp_message", wait=True)
    assert [r[:3] for r in rj.value.rejections] == [(1, "too_large", "$")]
    # The connection survived: the next record goes through.
    assert c.record(sample_message("user01", "sess01", 2), schema_type="a3cp_message", wait=True) == 2
    assert by_producer(data_root)[c.producer] == [2]
