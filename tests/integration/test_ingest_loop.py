"""The ingest loop (issue 11): batching client, per-type sync independence, unwritable destinations.

Real recorder processes, real sockets, real files. Slow disks are simulated
with ``RECORDER_FAULT=before_fsync@TEXT:sleep_ms:N`` (only files whose path
holds TEXT); unwritable destinations with a regular file where a directory
should be, a file name over NAME_MAX, or a directory removed under an open
journal (root ignores chmod, so never chmod).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from recorder import Client, RecorderUnavailable, RejectedError
from recorder.testing import sample_message, sample_raw_action

from .service_support import Procs, batches, journal_lines, message_file, on_disk, stats, wait_for

pytestmark = pytest.mark.timeout(180)


def _msg(i: int, user: str = "user01", session: str = "sess01") -> dict[str, object]:
    return sample_message(user, session, i)


def test_a_lone_record_to_an_idle_recorder_is_sent_at_once_and_company_is_coalesced(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """With nothing in flight, record() pushes its frame before returning; records that come while one
    is in flight wait for its acknowledgement and go together in one frame, committed as one batch."""
    procs.recorder(data_root, env={"RECORDER_FAULT": "before_fsync:sleep_ms:300"})
    c = clients(data_root, timeout=30)
    c.record(_msg(1), schema_type="a3cp_message", wait=True)  # opens the journal
    frames = c.counters["frames"]
    c.record(_msg(2), schema_type="a3cp_message")
    assert c.counters["frames"] == frames + 1, "an idle client's record did not go out at once"
    path = message_file(data_root)
    wait_for(lambda: len(journal_lines(path)) == 3, 10, "record #2 written (its fdatasync now sleeps)",
             interval=0.002)
    for i in range(3, 43):
        c.record(_msg(i), schema_type="a3cp_message")
    assert c.counters["frames"] == frames + 1, "records sent while #2 is in flight did not wait for company"
    c.flush(timeout=30)
    # #3..#42 went out together (one frame per ~1 ms of recording, usually one) and were committed as one batch
    assert c.counters["frames"] - frames - 1 < 40 // 2
    assert batches(path) == [[1], [2], list(range(3, 43))]


@pytest.mark.parametrize("slow", ["raw_action", "a3cp_message"], ids=["other-type-slow", "negative-control-own-slow"])
def test_a_slow_fdatasync_of_one_type_does_not_delay_another_types_acknowledgements(
        procs: Procs, data_root: Path, clients: Callable[..., Client], slow: str) -> None:
    """While a raw_action batch sits in a 3 s fdatasync, another producer's a3cp_message records are each
    acknowledged. Negative control: with the a3cp_message fdatasync slowed instead, they come last."""
    procs.recorder(data_root, env={"RECORDER_FAULT": f"before_fsync@{slow}:sleep_ms:3000"})
    a, b = clients(data_root, timeout=60), clients(data_root, timeout=60)
    a.record(sample_raw_action("user01", "sess01", 1), schema_type="raw_action")
    first = b.record(_msg(2), schema_type="a3cp_message")
    for i in range(3, 8):
        b.record(_msg(i), schema_type="a3cp_message")
    done = threading.Event()
    threading.Thread(target=lambda: (b.flush(timeout=60), done.set()), daemon=True).start()
    # whichever comes first: b's records all durable, or a's raw_action durable
    wait_for(lambda: done.is_set() or a.acked >= 1, 60, "b acknowledged or a's slow batch done", interval=0.005)
    if slow == "raw_action":
        assert done.is_set() and b.acked >= first + 5 and a.acked == 0, (
            "b's a3cp_message records waited for a's slow raw_action fdatasync")
    else:
        assert a.acked >= 1 and not done.is_set(), "negative control: b's own slow fdatasync went unseen"
    a.flush(timeout=60)
    b.flush(timeout=60)


def _refused_codes(err: RejectedError) -> set[str]:
    return {code for _pseq, code, _field, _reason in err.rejections}


def test_an_unwritable_destination_refuses_only_its_own_records_and_is_retried(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """A regular file where one user's directory should be: that user's records are refused
    (`unwritable`, quarantined with the reason), every other user's are stored, the recorder never
    restarts; once the file is gone, the destination is tried again and records land there."""
    proc = procs.recorder(data_root)
    pid = proc.first_ready["pid"]
    users = data_root / "logs" / "users"
    users.mkdir(parents=True)
    (users / "blocked").write_text("a file where a directory should be\n")
    c = clients(data_root, timeout=30)
    for i in range(20):
        c.record(_msg(i, "blocked" if i % 2 else "user01"), schema_type="a3cp_message")
    with pytest.raises(RejectedError) as info:
        c.flush(timeout=30)
    assert _refused_codes(info.value) == {"unwritable"}
    assert sorted(p for p, *_ in info.value.rejections) == list(range(2, 21, 2))
    stored = [e for e in on_disk(data_root) if e["schema_type"] == "a3cp_message"]
    assert sorted(e["pseq"] for e in stored) == list(range(1, 20, 2))
    quarantined = [o for o in journal_lines(data_root / "_recorder" / "quarantine.jsonl")[1:]
                   if o.get("code") == "unwritable"]
    assert len(quarantined) == 10 and all("users/blocked" in o["reason"] for o in quarantined)
    s = stats(data_root)
    assert s["pid"] == pid and s["restarts"] == 0
    t = s["types"]["a3cp_message"]
    assert t["unwritable"]["refused"] == 10 and any("blocked" in d for d in t["unwritable"]["destinations"])
    # the blocker goes away: within the retry interval (5 s) records of that user are stored again
    (users / "blocked").unlink()

    def lands() -> bool:
        try:
            c.record(_msg(99, "blocked"), schema_type="a3cp_message", wait=True, timeout=10)
            return True
        except RejectedError:
            return False

    wait_for(lands, 30, "a record of the unblocked user stored", interval=0.5)
    assert any(e["user_id"] == "blocked" for e in on_disk(data_root) if e["schema_type"] == "a3cp_message")
    assert stats(data_root)["pid"] == pid


def test_a_name_over_name_max_refuses_that_destination_only(
        procs: Procs, data_root: Path, tmp_path: Path, clients: Callable[..., Client]) -> None:
    """A template whose file name grows past NAME_MAX (255 bytes) for long ids refuses just those records."""
    cfg = Path(__file__).resolve().parents[2] / "configs" / "recorder.toml"
    text = cfg.read_text().replace('path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}.jsonl"',
                                   'path = "logs/{user_id}_{session_id}_{user_id}_{session_id}.jsonl"', 1)
    config = tmp_path / "long.toml"
    config.write_text(text)
    p = procs.spawn("recorder", ["-m", "recorder.router", "--data-root", str(data_root), "--config", str(config)])
    p.first_ready = p.next_ready()
    c = Client(data_root=str(data_root), config=str(config), timeout=30)
    try:
        long_user, long_session = "u" * 64, "s" * 64
        c.record(_msg(1, long_user, long_session), schema_type="a3cp_message")
        c.record(_msg(2, "user01", "sess01"), schema_type="a3cp_message")
        with pytest.raises(RejectedError) as info:
            c.flush(timeout=30)
        assert [(pseq, code) for pseq, code, *_ in info.value.rejections] == [(1, "unwritable")]
        assert [e["pseq"] for e in on_disk(data_root) if e["schema_type"] == "a3cp_message"] == [2]
    finally:
        c.close(timeout=0) if c.pending else c.close()


def test_a_directory_removed_under_an_open_journal_is_never_acknowledged_into(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """Removing a session's directory while its journal is open: the next batch, written into the
    unlinked file, is refused (`unwritable`), not acknowledged; later records make the file anew."""
    procs.recorder(data_root)
    c = clients(data_root, timeout=30)
    c.record(_msg(1), schema_type="a3cp_message", wait=True)
    session_dir = message_file(data_root).parent
    shutil.rmtree(session_dir)
    with pytest.raises(RejectedError) as info:
        c.record(_msg(2), schema_type="a3cp_message", wait=True)
    assert _refused_codes(info.value) == {"unwritable"}
    c.record(_msg(3), schema_type="a3cp_message", wait=True)
    assert [e["pseq"] for e in on_disk(data_root) if e["schema_type"] == "a3cp_message"] == [3]


@pytest.mark.skipif(sys.platform != "linux", reason="RSS from /proc")
def test_a_producer_far_faster_than_the_recorder_keeps_its_memory_under_the_stated_bound(
        procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """30 s of a producer sending as fast as it can to a recorder whose fdatasync takes 200 ms: the
    recorder's RSS stays under its baseline plus the bound it states, nothing is lost, all is acknowledged."""
    import psutil

    proc = procs.recorder(data_root, env={"RECORDER_FAULT": "before_fsync:sleep_ms:200"})
    rec = psutil.Process(proc.first_ready["pid"])
    c = clients(data_root, timeout=120, max_pending=20_000)
    c.record(_msg(0), schema_type="a3cp_message", wait=True)
    baseline = rec.memory_info().rss
    pad = "x" * 6000
    peak = 0
    sent = 1

    end = time.monotonic() + 30
    next_sample = 0.0
    while time.monotonic() < end:
        m = _msg(sent)
        m["annotation"] = {**m["annotation"], "notes": pad}  # type: ignore[dict-item]
        c.record(m, schema_type="a3cp_message")
        sent += 1
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + 0.1
            peak = max(peak, rec.memory_info().rss)
    s = stats(data_root)
    bound = s["memory_bound_bytes"]
    c.flush(timeout=300)
    peak = max(peak, rec.memory_info().rss)
    assert s["ingress_paused"] >= 1, "the recorder kept up: the producer was not faster, nothing was tested"
    assert peak <= baseline + bound, f"RSS {peak / 2**20:.0f} MiB > {baseline / 2**20:.0f} + {bound / 2**20:.0f} MiB"
    got = sorted(e["pseq"] for e in on_disk(data_root) if e["schema_type"] == "a3cp_message")
    assert got == list(range(1, sent + 1))
    assert c.acked == sent


def test_the_supervisor_gives_up_in_one_line_naming_why(
        procs: Procs, data_root: Path, tmp_path: Path) -> None:
    """A recorder that dies at every record: after `restart_limit` restarts the supervisor exits 3 with one
    line giving the crash count and the last crash's cause."""
    cfg = Path(__file__).resolve().parents[2] / "configs" / "recorder.toml"
    config = tmp_path / "limit.toml"
    config.write_text(cfg.read_text().replace("[recorder]\n", "[recorder]\nrestart_limit = 2\n", 1))
    sup = procs.supervisor(data_root, env={"RECORDER_FAULT": "after_receive:kill:1"},
                           extra=["--config", str(config)])
    c = Client(data_root=str(data_root), config=str(config), timeout=60, connect_timeout=60)
    try:
        c.record(_msg(1), schema_type="a3cp_message")  # each recorder dies on it; the client resends it
        assert sup.wait(120) == 3
    finally:
        with contextlib.suppress(RecorderUnavailable):
            c.close(timeout=0)
    lines = [line for line in sup.stderr().splitlines() if "giving up" in line]
    assert len(lines) == 1, sup.describe()
    assert "2 crashes" in lines[0] and "signal 9" in lines[0], lines[0]
