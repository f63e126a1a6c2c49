"""Group commit with a double buffer, proven with a slowed fdatasync; and `recorder stats`.

``RECORDER_FAULT=before_fsync:sleep_ms:N`` makes every fdatasync of the
recorder N ms slower. Batches are read back from the journal: the last line
of every appended batch carries ``"commit": true``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from recorder import Client
from recorder.testing import sample_audit, sample_message, sample_raw_action

from .service_support import (
    Procs,
    assert_verified,
    batches,
    clean_env,
    journal_lines,
    message_file,
    stats,
    wait_for,
)


def _msg(i: int) -> dict[str, object]:
    return sample_message("user01", "sess01", i)


def test_records_arriving_during_a_slow_fsync_are_committed_together_next(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """Records that arrive while a batch's fdatasync runs are all committed together in the very next batch."""
    procs.recorder(data_root, env={"RECORDER_FAULT": "before_fsync:sleep_ms:150"})
    c = clients(data_root, timeout=30)
    path = message_file(data_root)
    c.record(_msg(1), schema_type="a3cp_message", wait=True)  # opens the journal
    following = [_msg(i) for i in range(3, 43)]
    c.record(_msg(2), schema_type="a3cp_message")
    wait_for(lambda: len(journal_lines(path)) == 3, 5, "record #2 written (its fdatasync now sleeps)",
             interval=0.002)
    for m in following:
        c.record(m, schema_type="a3cp_message")
    c.flush(timeout=30)
    # An idle writer commits #1 and #2 alone at once; #3..#42 arrived during
    # #2's fdatasync, were accepted meanwhile, and went out in one batch.
    assert batches(path) == [[1], [2], list(range(3, 43))]


def test_throughput_on_a_slow_disk_grows_with_batch_size(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """With a 50 ms fdatasync, a burst of 2000 records takes a few batches, far less than 2000 x 50 ms."""
    slow_s = 0.05
    procs.recorder(data_root, env={"RECORDER_FAULT": f"before_fsync:sleep_ms:{slow_s * 1000:g}"})
    c = clients(data_root, timeout=30)
    path = message_file(data_root)
    c.record(_msg(0), schema_type="a3cp_message", wait=True)  # opens the journal

    t0 = time.monotonic()
    for i in range(1, 6):  # one record in flight at a time: one fdatasync each
        c.record(_msg(i), schema_type="a3cp_message", wait=True)
    serial_rate = 5 / (time.monotonic() - t0)

    burst = [_msg(i) for i in range(6, 2006)]
    t0 = time.monotonic()
    for m in burst:
        c.record(m, schema_type="a3cp_message")
    c.flush(timeout=60)
    took = time.monotonic() - t0
    burst_rate = len(burst) / took

    sizes = [len(b) for b in batches(path)]
    assert sizes[:6] == [1] * 6
    burst_sizes = sizes[6:]
    assert sum(burst_sizes) == len(burst)
    assert serial_rate < 1 / slow_s, f"serial {serial_rate:.1f} records/s: is the fdatasync slowed?"
    assert len(burst_sizes) <= 40, f"{len(burst_sizes)} batches for 2000 records: {burst_sizes}"
    assert took < len(burst) * slow_s / 20, f"{took:.2f} s for {len(burst)} records"
    assert burst_rate > 10 * serial_rate, (burst_rate, serial_rate, burst_sizes)
    print(f"serial {serial_rate:.1f}/s, burst {burst_rate:.0f}/s in {took:.2f} s, batches {burst_sizes}")
    s = stats(data_root)["types"]["a3cp_message"]
    assert s["records"] == 2006 and s["batches"] == len(sizes)
    assert s["batch_max"] == max(sizes) > 100, s


def test_stats_report_records_per_type_and_restarts(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """`recorder stats --json` reports per-type records of the running recorder and the supervisor's restarts."""
    sup = procs.supervisor(data_root)
    first = sup.first_ready
    c = clients(data_root, timeout=20)
    for i in range(30):
        c.record(_msg(i), schema_type="a3cp_message")
        if i % 10 == 0:
            c.record(sample_raw_action("user01", "sess01", i), schema_type="raw_action")
    for i in range(5):
        c.record(sample_audit("user01", "sess01", "session_start", i), schema_type="audit_event")
    c.flush()
    s = stats(data_root)
    assert (s["pid"], s["restarts"]) == (first["pid"], 0)
    assert {t: v["records"] for t, v in s["types"].items() if v["records"]} == \
        {"a3cp_message": 30, "raw_action": 3, "audit_event": 5}
    assert s["types"]["a3cp_message"]["bytes"] > 30 * 500
    assert s["types"]["a3cp_message"]["ack_latency_ms"]["p50"] > 0
    # every record passed the one accept step, the sample messages on its fast path
    assert s["types"]["a3cp_message"]["accept"] == {"fast": 30, "reference": 0, "disagreements": 0}
    # Under load a client resends what stays unacknowledged for 2 s; the copies are received, counted
    # as duplicates (or gaps while a resend overtakes) and dropped: what counts is what was taken.
    taken = s["received"] - s["duplicates"] - s["gaps"] - s["unknown_producer"] - s["bad_frames"]
    assert taken == 38 and s["producers"] == 1, s
    assert s["rss_bytes"] > 0 and s["disk"]["total"] > 0

    os.kill(first["pid"], signal.SIGKILL)
    again = sup.next_ready(30)
    for i in range(30, 40):
        c.record(_msg(i), schema_type="a3cp_message")
    c.record(sample_audit("user01", "sess01", "session_end", 99), schema_type="audit_event")
    c.flush()
    s = stats(data_root)
    # Counters are those of the running recorder process (they restart with it).
    assert (s["pid"], s["restarts"]) == (again["pid"], 1)
    assert s["types"]["a3cp_message"]["records"] == 10
    assert s["types"]["audit_event"]["records"] == 1
    assert s["types"]["raw_action"]["records"] == 0

    text = subprocess.run([sys.executable, "-m", "recorder", "stats", "--data-root", str(data_root)],
                          capture_output=True, text=True, timeout=30, env=clean_env())
    assert text.returncode == 0, text.stderr
    assert f"recorder pid {again['pid']}" in text.stdout and "restarts 1" in text.stdout
    sup.signal(signal.SIGTERM)
    assert sup.wait(10) == 0
    assert_verified(data_root)


def test_stats_without_a_recorder_fails_clearly(data_root: Path) -> None:
    """`recorder stats` with no recorder running exits non-zero within its timeout, saying so."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "recorder", "stats", "--data-root", str(data_root),
                        "--timeout", "0.5"], capture_output=True, text=True, timeout=30, env=clean_env())
    assert r.returncode != 0
    assert "no answer" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 10
