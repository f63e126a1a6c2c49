"""The crash soak, short: ``python -m benchmarks soak`` with a few kills, checked by its own checker.

The full soak (``python -m benchmarks soak --kills 200``) is a documented
command; this runs the same orchestration with 4 kills and 4 producers
(rotation and Parquet sealing included), then runs ``benchmarks.soak.check``
again in this process on the data root and histories it kept. The seed of
the kill delays comes from ``RECORDER_TEST_SEED`` or the clock, and is
named in every failure.

Below it, what the long soak found, made deterministic: records durable in
a sealed segment (or in a journal closed for max_open_files) whose
acknowledgement the producer never got are written again after a restart
once other producers have sealed enough segments of the same type (or
opened enough files) (raw protocol frames); a SIGKILL inside a head checkpoint
leaves a temp file that is never swept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from recorder import protocol as P
from recorder import Store, read
from recorder.testing import sample_message
from recorder.schema.validation import encode_record

from .service_support import Procs, journal_lines, wait_for

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not installed
    sys.path.insert(0, str(REPO))

from benchmarks import soak  # noqa: E402

KILLS = 4
PRODUCERS = 4


@pytest.mark.timeout(180)
def test_short_soak_loses_and_duplicates_no_acknowledged_record(procs: Procs, tmp_path: Path) -> None:
    """Four random SIGKILLs of a supervised recorder under four producers lose, duplicate and reorder nothing acknowledged, and everything verifies."""
    seed = int(os.environ.get("RECORDER_TEST_SEED", time.time_ns() % 2**32))
    out = tmp_path / "soak.json"
    p = procs.spawn("soak", ["-m", "benchmarks", "soak", "--kills", str(KILLS), "--producers", str(PRODUCERS),
                             "--rate", "150", "--rotate-message", "200", "--rotate-action", "50", "--seed", str(seed),
                             "--dir", str(tmp_path), "--keep", "--out", str(out)],
                    env={"PYTHONPATH": str(REPO)})
    rc = p.wait(timeout=150)
    assert out.exists(), f"seed {seed}: the soak wrote no results\n{p.describe()}"
    result = json.loads(out.read_text(encoding="utf-8"))
    summary = f"seed {seed}\n{soak.summary(result)}\n{p.describe()}"
    work = Path(result["work_dir"])
    data = work / "data"

    # The same checker, run here on what the soak left behind.
    histories = soak.load_histories(sorted(work.glob("history-*.json")))
    assert len(histories) == PRODUCERS, summary
    report = soak.check(data, histories, limits={"a3cp_message": (200, 0), "raw_action": (50, 0)})
    assert report.violations == [], summary + "\n" + "\n".join(report.violations)
    assert report.segments["a3cp_message"]["largest_records"] <= 200, summary  # limits held through every restart
    assert report.segments["raw_action"]["largest_records"] <= 50, summary
    assert "0 problems" in report.trail, summary  # one segment_sealed event per sealed segment

    assert result["violations"] == [] and rc == 0, summary
    assert result["kills_survived"] == KILLS, summary
    assert len({k["new_pid"] for k in result["kills"]} | {result["kills"][0]["pid"]}) == KILLS + 1, summary
    records = result["records"]
    assert records["lost"] == 0 and records["duplicates"] == 0 and records["unknown"] == 0, summary
    assert records["acked"] > 1000 and records["rejected"] > 0, summary
    assert records["stored"] == records["acked"], summary
    assert result["audit_trail"] == report.trail, summary
    # The run exercised rotation and Parquet sealing, not just one open file per type.
    assert list(data.rglob("raw_action_*.parquet")), summary
    assert len(list(data.rglob("a3cp_message_*.jsonl"))) > PRODUCERS, summary


# -- what the soak found, made deterministic ------------------------------------------------------
_ROTATING = """\
[recorder]
min_free_bytes = 0
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.jsonl"
rotate_records = 5
"""


def _push_records(push: Any, producer: str, user: str, session: str, pseqs: range) -> None:
    for pseq in pseqs:
        raw = encode_record(sample_message(user, session, pseq))
        push.send(P.encode(P.Record(producer, pseq, "a3cp_message", raw)))


def _active(root: Path) -> dict[str, str]:
    path = root / "_recorder" / "state" / "active-a3cp_message.json"
    state: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return state


def _restart_and_resend(sup: Any, first: dict[str, Any], push: Any, dealer: Any) -> None:
    """SIGKILL the recorder; then "pa", never having read an acknowledgement, says Hello and resends 1..5."""
    import zmq

    os.kill(first["pid"], signal.SIGKILL)
    again = sup.next_ready()
    assert again["pid"] != first["pid"]
    dealer.setsockopt(zmq.IDENTITY, b"pa")
    dealer.connect(again["control"])
    dealer.send(P.encode(P.Hello("pa", 0)))
    assert dealer.poll(10_000), "no Welcome"
    welcome = P.decode_control(dealer.recv())
    assert isinstance(welcome, P.Welcome) and welcome.expected == 1, welcome
    _push_records(push, "pa", "usera", "sa", range(1, 6))
    watermark = 0
    deadline = time.monotonic() + 20
    while watermark < 5 and time.monotonic() < deadline:
        if dealer.poll(200):
            msg = P.decode_control(dealer.recv())
            if isinstance(msg, P.Ack):
                watermark = msg.watermark
        else:
            dealer.send(P.encode(P.Ping("pa")))
    assert watermark == 5, f"pa acknowledged up to {watermark}"


def _run_resend_case(procs: Procs, tmp_path: Path, config_text: str, before_kill: Any) -> Counter[int]:
    """A supervised recorder with ``config_text``; ``before_kill(root, push)`` sends pa's and others' records;
    then pa resends after a restart. Returns pa's copies on disk per pseq."""
    import zmq

    root = tmp_path / "data"
    config = tmp_path / "recorder.toml"
    config.write_text(config_text, encoding="utf-8")
    procs.roots.add(str(root))
    sup = procs.spawn("supervisor", ["-m", "recorder", "run", "--data-root", str(root), "--config", str(config)])
    first = sup.next_ready()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(first["ingress"])
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        before_kill(root, push)
        _restart_and_resend(sup, first, push, dealer)
    finally:
        push.close(linger=0)
        dealer.close(linger=0)
        ctx.term()
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0
    return Counter(e["pseq"] for e in read(root) if e["producer"] == "pa")


@pytest.mark.parametrize("others", [
    2,
    5,
])
def test_records_of_a_sealed_segment_resent_after_a_restart_are_not_written_again(
        procs: Procs, tmp_path: Path, others: int) -> None:
    """Records made durable in a segment that was then sealed, whose acknowledgement the producer never got, are stored once when it resends them to a restarted recorder, however many segments other producers sealed meanwhile."""

    def before_kill(root: Path, push: Any) -> None:
        # "pa" fills one segment (sealed after that batch) and never reads its acknowledgements;
        # then `others` producers fill and seal one segment each.
        a_segment = "logs/users/usera/sessions/sa/a3cp_message_0000.jsonl"
        _push_records(push, "pa", "usera", "sa", range(1, 6))
        wait_for(lambda: _active(root).get(a_segment, "").startswith("recent"), 20, "pa's segment sealed",
                 state=lambda: _active(root))
        for i in range(others):
            _push_records(push, f"pb{i}", f"userb{i}", "sb", range(1, 6))

        def others_sealed() -> bool:  # every seal finished and the state file lists the recent ones
            manifests = [root / f"logs/users/userb{i}/sessions/sb/a3cp_message_0000.manifest.json"
                         for i in range(others)]
            states = list(_active(root).values())
            # every seal within the last two minutes stays listed (recorder/storage/writer.py _RECENT_S)
            recent = sum(1 for st in states if st.startswith("recent"))
            return all(m.exists() for m in manifests) and recent == others + 1

        wait_for(others_sealed, 20, f"{others} other segments sealed", state=lambda: _active(root))

    copies = _run_resend_case(procs, tmp_path, _ROTATING, before_kill)
    assert copies == {p: 1 for p in range(1, 6)}, f"pa's records on disk (pseq: copies): {dict(copies)}"


_FEW_OPEN = """\
[recorder]
min_free_bytes = 0
max_open_files = 2
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}.jsonl"
"""


@pytest.mark.parametrize("others", [
    1,
    2,
])
def test_records_of_a_journal_closed_for_max_open_files_resent_after_a_restart_are_not_written_again(
        procs: Procs, tmp_path: Path, others: int) -> None:
    """Records made durable in a journal that was then closed to respect max_open_files, whose acknowledgement the producer never got, are stored once when it resends them to a restarted recorder."""

    def before_kill(root: Path, push: Any) -> None:
        a_file = "logs/users/usera/sessions/sa/a3cp_message.jsonl"
        _push_records(push, "pa", "usera", "sa", range(1, 6))
        wait_for(lambda: _active(root).get(a_file) == "open" and len(read_lines(root / a_file)) == 5, 20,
                 "pa's records written", state=lambda: _active(root))
        for i in range(others):
            _push_records(push, f"pb{i}", f"userb{i}", "sb", range(1, 6))
            b_file = f"logs/users/userb{i}/sessions/sb/a3cp_message.jsonl"
            wait_for(lambda: _active(root).get(b_file) == "open", 20, f"pb{i}'s file open",
                     state=lambda: _active(root))

    copies = _run_resend_case(procs, tmp_path, _FEW_OPEN, before_kill)
    assert copies == {p: 1 for p in range(1, 6)}, f"pa's records on disk (pseq: copies): {dict(copies)}"


def read_lines(path: Path) -> list[Any]:
    """Whole record lines of one journal (header excluded); none while it does not exist."""
    return journal_lines(path)[1:] if path.exists() else []


_KILL_IN_CHECKPOINT = """
import os, signal, sys
from recorder import Store
from recorder.storage import _durable
from recorder.testing import sample_message
root, session = sys.argv[1], sys.argv[2]
store = Store(None, data_root=root)
for i in range(3):
    store.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
def hook(point):
    # SIGKILL inside the journal's head checkpoint write, its temp file complete, not yet renamed
    if point == "before_rename" and any(".head.tmp-" in n for n in os.listdir(session)):
        os.kill(os.getpid(), signal.SIGKILL)
_durable.set_fault_hook(hook)
store.close()
"""


def test_a_checkpoint_interrupted_by_sigkill_leaves_no_temp_file_once_the_journal_is_used_again(
        tmp_path: Path) -> None:
    """A SIGKILL inside a journal's head checkpoint leaves no temp file once a recorder has reopened and closed that journal."""
    root = tmp_path / "data"
    session = root / "logs" / "users" / "user01" / "sessions" / "sess01"
    r = subprocess.run([sys.executable, "-c", _KILL_IN_CHECKPOINT, str(root), str(session)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [p.name for p in session.glob(".*.tmp-*")], "the kill did not land inside the checkpoint write"
    with Store(None, data_root=root) as store:
        for i in range(3, 6):
            store.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
    assert [e["record"]["timestamp"] for e in read(root)] == [sample_message(i=i)["timestamp"] for i in range(6)]
    assert soak.temp_files(root) == []
