"""SIGKILL of the recorder (at named points and at random moments) under a supervisor.

After every kill: the supervisor starts a new recorder (a new pid), clients
resend what was not acknowledged, every acknowledged record is on disk
exactly once and in each producer's order, every chain verifies, and no
temp file of an interrupted atomic write remains.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from recorder import Client, read
from recorder.testing import sample_audit, sample_message

from .service_support import (
    Procs,
    assert_verified,
    by_producer,
    check_exactly_once,
    journal_lines,
    message_file,
    temp_files,
    wait_for,
)

# The supervisor hands its environment to every recorder it starts, so a
# RECORDER_FAULT set on it fires in the restarted recorder too, with its
# counter back at zero. The kill is therefore set at the KILL_AT-th
# occurrence, and the restarted recorder gets far fewer than KILL_AT
# occurrences (a short burst of AFTER_RESTART records, a few batches).
KILL_AT = 40
AFTER_RESTART = 8


def _restarts(sup_stderr: str) -> list[str]:
    return [ln for ln in sup_stderr.splitlines() if "exited with" in ln and "restart #" in ln]


@pytest.mark.parametrize("point", ["after_receive", "after_write", "before_fsync", "after_fsync"])
def test_sigkill_at_named_point_loses_no_acknowledged_record(
        procs: Procs, data_root: Path, clients: Callable[..., Client], point: str) -> None:
    """A recorder SIGKILLed at a named point is restarted, and every acknowledged record is on disk once, in order."""
    sup = procs.supervisor(data_root, env={"RECORDER_FAULT": f"{point}:kill:{KILL_AT}"})
    first = sup.first_ready
    c = clients(data_root, timeout=30)
    # One record at a time (one batch each) until the fault fires: the record
    # in flight then waits for the restarted recorder and its resend.
    again = None
    sent = 0
    while again is None:
        assert sent < 3 * KILL_AT, f"no restart after {sent} records: the fault at {point} never fired"
        c.record(sample_message("user01", "sess01", sent), schema_type="a3cp_message", wait=True)
        sent += 1
        again = sup.ready_nowait()
    for i in range(AFTER_RESTART):
        c.record(sample_message("user01", "sess01", sent + i), schema_type="a3cp_message")
    sent += AFTER_RESTART
    c.flush(timeout=30)
    assert again["pid"] != first["pid"]
    assert again["epoch"] != first["epoch"]
    wait_for(lambda: _restarts(sup.stderr()), 10, "the supervisor to report the crash", state=sup.stderr)
    assert [f"exited with -{int(signal.SIGKILL)}" in ln for ln in _restarts(sup.stderr())] == [True]
    assert c.acked == sent and c.counters["rejected"] == 0
    assert c.counters["resent"] >= 1, c.counters
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0
    assert sup.ready_nowait() is None, "the recorder was restarted more than once"
    disk = check_exactly_once(data_root, [{"producer": c.producer, "acked": c.acked}])
    assert disk[c.producer] == list(range(1, sent + 1))
    assert_verified(data_root)
    assert temp_files(data_root) == []


def test_random_sigkills_under_load_lose_no_acknowledged_record(procs: Procs, data_root: Path) -> None:
    """Three SIGKILLs of the recorder at random moments while two producers send lose no acknowledged record."""
    seed = int(os.environ.get("RECORDER_TEST_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    sup = procs.supervisor(data_root)
    pids = [sup.first_ready["pid"]]
    per_producer = 1500
    users = ["user00", "user01"]
    producers = [procs.producer(data_root, per_producer, user=u, rate=600, audit_every=25) for u in users]
    files = [message_file(data_root, u) for u in users]

    def written() -> int:  # bytes of a3cp_message lines on disk, both producers
        return sum(f.stat().st_size if f.exists() else 0 for f in files)

    # Kill at random points of the traffic (by bytes on disk, so each kill
    # lands while the producers are still sending).
    def started() -> bool:  # a header and at least one record line in both journals
        return all(f.exists() and f.read_bytes().count(b"\n") >= 2 for f in files)

    wait_for(started, 20, "both producers' first records", state=written)
    line = len(files[0].read_bytes().splitlines()[1]) + 1
    total = 2 * per_producer * line
    marks = sorted(rng.uniform(0.1, 0.7) * total for _ in range(3))
    for mark in marks:
        wait_for(lambda: written() >= mark, 30, f"{mark:.0f} bytes on disk (seed {seed})", state=written)
        os.kill(pids[-1], signal.SIGKILL)
        pids.append(sup.next_ready(30)["pid"])
    results = [p.result(timeout=90) for p in producers]
    for r in results:
        assert r["error"] is None and r["rejected"] == [], (seed, r)
        assert r["acked"] == r["sent"] == per_producer + per_producer // 25, (seed, r)
    assert len(set(pids)) == 4, pids
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0
    assert len(_restarts(sup.stderr())) == 3, sup.stderr()
    # Order within each schema type; across types see the xfail test below.
    disk = check_exactly_once(data_root, results, per_type=True)
    for r in results:
        assert sorted(disk[r["producer"]]) == list(range(1, r["sent"] + 1)), f"seed {seed}"
    assert_verified(data_root)
    assert temp_files(data_root) == [], f"seed {seed}"


def test_recorder_dies_with_its_supervisor(procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """SIGKILL of the supervisor takes its recorder down too, so a new supervisor can take the data root."""
    sup = procs.supervisor(data_root)
    child = sup.first_ready["pid"]
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait(10)

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, 10, f"recorder pid {child} to exit after its supervisor")
    sup2 = procs.supervisor(data_root)
    assert sup2.first_ready["pid"] != child
    c = clients(data_root, timeout=20)
    assert c.record(sample_message(i=1), schema_type="a3cp_message", wait=True) == 1


def test_no_temp_file_survives_a_kill_inside_an_atomic_write(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """A recorder killed between writing and renaming a temp file leaves no temp file once a recorder ran again."""
    crashed = procs.recorder(data_root, env={"RECORDER_FAULT": "before_rename:kill:1"}, ready=False)
    assert crashed.wait(30) == -signal.SIGKILL, crashed.describe()
    assert temp_files(data_root), "the fault did not interrupt an atomic write"
    sup = procs.supervisor(data_root)
    c = clients(data_root, timeout=20)
    c.record(sample_message(i=1), schema_type="a3cp_message", wait=True)
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0
    assert temp_files(data_root) == []
    assert_verified(data_root)


def test_producer_order_holds_across_schema_types_after_a_crash(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """A producer's records of two schema types come back in the producer's order after a SIGKILL (read order)."""
    slow = procs.recorder(data_root, env={"RECORDER_FAULT": "before_fsync:sleep_ms:250"})
    c = clients(data_root, timeout=30)
    audit_file = message_file(data_root, schema_type="audit_event")
    a3cp_file = message_file(data_root)
    c.record(sample_audit("user01", "sess01", "session_start", 1), schema_type="audit_event", wait=True)
    # #2 opens the a3cp_message journal: its writer sleeps in the header's fdatasync,
    # so #3 waits in that writer's inbox while the idle audit writer takes #4.
    c.record(sample_message("user01", "sess01", 2), schema_type="a3cp_message")
    wait_for(a3cp_file.exists, 10, "the a3cp_message journal to be created")
    c.record(sample_message("user01", "sess01", 3), schema_type="a3cp_message")
    c.record(sample_audit("user01", "sess01", "session_start", 4), schema_type="audit_event")
    wait_for(lambda: any(o.get("pseq") == 4 for o in journal_lines(audit_file)), 10,
             "record #4 written to the audit_event journal")
    os.kill(slow.pid, signal.SIGKILL)
    assert slow.wait(10) == -signal.SIGKILL
    written = [o.get("pseq") for o in journal_lines(a3cp_file)[1:]]
    assert 3 not in written, f"precondition: #3 must not have been written before the kill ({written})"
    procs.recorder(data_root)
    c.flush(timeout=30)
    assert c.acked == 4
    assert_verified(data_root)
    stored = {e["pseq"]: e["seq"] for e in read(data_root) if e["producer"] == c.producer}
    assert stored[3] > stored[4], f"precondition: #3 was stored after #4 (seqs {stored})"
    assert by_producer(data_root)[c.producer] == [1, 2, 3, 4]


def test_large_unacknowledged_batch_is_not_written_twice(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """A batch made durable but never acknowledged (killed after fdatasync) is not written again, however large."""
    # after_fsync occurrences in a fresh data root: 4 at start (quarantine and
    # audit headers, recorder_start, recorder_ready), the journal header and
    # record #1, then #2 alone, then #3..#1002 together: the 8th.
    fault = "before_fsync:sleep_ms:200,after_fsync:kill:8"
    rec = procs.recorder(data_root, env={"RECORDER_FAULT": fault})
    c = clients(data_root, timeout=30)
    burst = [sample_message("user01", "sess01", i) for i in range(3, 1003)]
    c.record(sample_message("user01", "sess01", 1), schema_type="a3cp_message", wait=True)
    c.record(sample_message("user01", "sess01", 2), schema_type="a3cp_message")
    path = message_file(data_root)
    wait_for(lambda: len(journal_lines(path)) == 3, 10, "record #2 written (its fdatasync now sleeps)")
    for m in burst:  # all arrive while #2's fdatasync sleeps: the next batch
        c.record(m, schema_type="a3cp_message")
    assert rec.wait(30) == -signal.SIGKILL, rec.describe()
    # Batches are capped near 1 MiB, so the burst is committed as a few large
    # batches; the kill lands after one of them is durable, before its ack.
    lines = journal_lines(path)
    durable = [o["pseq"] for o in lines[1:]]
    assert durable == list(range(1, len(durable) + 1)) and len(durable) > c.acked, "precondition"
    procs.recorder(data_root)
    c.flush(timeout=30)
    stored = by_producer(data_root)[c.producer]
    twice = sorted(p for p, n in Counter(stored).items() if n > 1)
    assert twice == [], f"{len(twice)} records written twice: #{twice[0]}..#{twice[-1]}"
    check_exactly_once(data_root, [{"producer": c.producer, "acked": c.acked}])
