"""A complete audit trail: every sealed segment has exactly one ``segment_sealed`` event, even when the
recorder is killed at any point of sealing (the writer closing the segment, or the sealer finishing it)."""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from recorder import Store, read, verify
from recorder.storage import _durable
from recorder.exceptions import DurabilityError
from recorder.storage._trail import check_trail, logged
from recorder.testing import sample_message

CONFIG = """\
[recorder]
min_free_bytes = 0

[types.msg]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{user_id}/{session_id}/msg_{segment:04d}.jsonl"
rotate_records = 3

[types.pq]
model = "recorder.a3cp:A3CPMessage"
format = "parquet"
path = "logs/{user_id}/{session_id}/pq_{segment:04d}.parquet"
rotate_records = 3
"""


def write_config(directory: Path) -> Path:
    path = directory / "trail.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def writer_points(cfg: Path, root: Path, schema_type: str) -> list[str]:
    """The fault points the writing thread passes while it records the record that fills segment 0, and seals it."""
    seen: list[str] = []
    counting = [False]

    def hook(point: str) -> None:
        if counting[0] and threading.current_thread() is threading.main_thread():
            seen.append(point)

    _durable.set_fault_hook(hook)
    try:
        with Store(cfg, data_root=root) as store:
            for i in range(3):
                counting[0] = i == 2
                store.record(sample_message(i=i), schema_type=schema_type, producer="p", pseq=i)
            counting[0] = False
            store.sealer.wait_idle(10)
    finally:
        _durable.set_fault_hook(None)
    return seen


def kill_writer_at(cfg: Path, root: Path, schema_type: str, step: int) -> int:
    """Record 3 records in a forked child that SIGKILLs itself at the writing thread's ``step``-th fault point
    while it records the third (and seals segment 0); returns the child's status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 3  # the step was never reached
        try:
            counting, count = [False], [0]

            def hook(point: str) -> None:
                if counting[0] and threading.current_thread() is threading.main_thread():
                    if count[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    count[0] += 1

            _durable.set_fault_hook(hook)
            store = Store(cfg, data_root=root)
            for i in range(3):
                counting[0] = i == 2
                store.record(sample_message(i=i), schema_type=schema_type, producer="p", pseq=i)
            counting[0] = False
        except BaseException:  # noqa: BLE001 - reported through the exit status
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def restart_and_fill(cfg: Path, root: Path, schema_type: str) -> None:
    """Reopen the data root, record 3 more records (sealing one more segment), stop cleanly."""
    with Store(cfg, data_root=root) as store:
        for i in range(3, 6):
            store.record(sample_message(i=i), schema_type=schema_type, producer="p", pseq=i)
        assert store.sealer.wait_idle(10)
        assert store.sealer.errors == []


@pytest.mark.parametrize("schema_type", ["msg", "pq"])
def test_a_kill_at_any_point_of_the_writer_sealing_a_segment_leaves_one_sealed_event(
        tmp_path: Path, schema_type: str) -> None:
    """SIGKILL at every fault point the writer passes while it commits the record that fills a segment and
    seals it (checkpoint, state file, audit event): after a restart every segment has exactly one
    segment_sealed event with its manifest's record count, and the recording verifies."""
    cfg = write_config(tmp_path)
    points = writer_points(cfg, tmp_path / "discover", schema_type)
    assert "before_rename" in points and points[-1] in ("after_fsync", "before_fsync"), points  # precondition
    failures = []
    for step, point in enumerate(points):
        root = tmp_path / f"k{step}"
        status = kill_writer_at(cfg, root, schema_type, step)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (step, point, status)
        restart_and_fill(cfg, root, schema_type)
        trail = check_trail(root)
        if trail.problems or trail.manifests < 1:
            failures.append(f"kill at {step}-{point}: {trail.summary()}: {trail.problems}")
        assert verify([root])[1] == [], (step, point)
        assert sorted(e["pseq"] for e in read(root)) in (list(range(6)), [0, 1, 3, 4, 5]), (step, point)
    assert failures == [], "\n".join(failures)


def test_a_missing_sealed_event_is_written_once_at_start_and_never_again(tmp_path: Path) -> None:
    """A segment the state file says is sealing, without its event, gets one event (marked recovered) at the next
    start; the start after that finds it and writes none."""
    cfg, root = write_config(tmp_path), tmp_path / "data"
    rel = "logs/elias01/sess_demo/msg_0000.jsonl"
    assert kill_writer_at(cfg, root, "msg", _index_of_state_rename(cfg, tmp_path)) != 0
    state = json.loads((root / "_recorder/state/active-msg.json").read_bytes())
    assert state[rel] == "sealing"
    with Store(cfg, data_root=root) as store:
        assert store.sealer.wait_idle(10)
        assert logged(store.root_fd, "segment_sealed", [rel]) == {rel}
    with Store(cfg, data_root=root):
        pass
    events = [json.loads(ln)["record"] for ln in (root / "_recorder/audit.jsonl").read_bytes().splitlines()[1:]]
    sealed = [e for e in events if e["event_type"] == "segment_sealed"]
    assert [(e["path"], e["records"], e.get("recovered")) for e in sealed] == [(rel, 3, True)]
    assert check_trail(root).problems == []


def _index_of_state_rename(cfg: Path, tmp_path: Path) -> int:
    """The writer's fault point just after the state file says "sealing" and before the audit event is written."""
    points = writer_points(cfg, tmp_path / "discover-state", "msg")
    renames = [i for i, p in enumerate(points) if p == "before_dir_fsync"]
    return renames[1]  # the checkpoint's rename, then the state file's


def test_logged_reads_the_audit_log_backwards_across_chunks(tmp_path: Path) -> None:
    """logged() finds events far from the end of a long audit log, and only the paths asked for."""
    cfg, root = write_config(tmp_path), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        for i in range(3):
            store.record(sample_message(i=i), schema_type="msg", producer="p", pseq=i)
        for k in range(3000):  # about 1.5 MB of other events after the one looked for
            store.event("filler", {"path": f"x/{k}", "pad": "p" * 300})
        first = "logs/elias01/sess_demo/msg_0000.jsonl"
        assert logged(store.root_fd, "segment_sealed", [first, "logs/none.jsonl"]) == {first}
        assert logged(store.root_fd, "filler", ["x/0", "x/2999", "x/3000"]) == {"x/0", "x/2999"}


DELETING = """\
[recorder]
min_free_bytes = 0

[types.msg]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{user_id}/{session_id}/msg_{segment:04d}.jsonl"
rotate_records = 2
max_bytes = 8000
on_limit = "delete_oldest"
"""


def kill_after_first_delete_entry(cfg: Path, root: Path) -> int:
    """Record in a forked child until delete_oldest makes room; SIGKILL it right after the catalog's first
    delete entry, before its segment_deleted event; returns the child's status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 3
        try:
            store = Store(cfg, data_root=root)
            add = store.catalog.add

            def add_then_die(op: str, *args: object, **kw: object) -> None:
                add(op, *args, **kw)  # type: ignore[arg-type]
                if op == "delete":
                    os.kill(os.getpid(), signal.SIGKILL)

            store.catalog.add = add_then_die  # type: ignore[method-assign]
            for i in range(40):
                store.record(sample_message(i=i), schema_type="msg", producer="p", pseq=i)
        except BaseException:  # noqa: BLE001 - reported through the exit status
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def test_a_kill_between_a_deletion_and_its_audit_event_gets_the_event_at_the_next_start(tmp_path: Path) -> None:
    """A segment deleted by a storage limit whose segment_deleted event a kill kept out gets it (marked recovered)
    when the recorder starts again, once; the trail then matches the tombstones."""
    (tmp_path / "d.toml").write_text(DELETING, encoding="utf-8")
    cfg, root = tmp_path / "d.toml", tmp_path / "data"
    status = kill_after_first_delete_entry(cfg, root)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert check_trail(root).events["segment_deleted"] == 0  # precondition: the event is missing
    for _ in range(2):  # the second start finds the event and writes no other
        with Store(cfg, data_root=root) as store:
            assert store.sealer.wait_idle(10)
    trail = check_trail(root)
    assert trail.tombstones == 1 and trail.events["segment_deleted"] == 1, trail.summary()
    assert trail.problems == [], trail.problems


def test_a_sealed_event_the_audit_log_dropped_is_written_again_by_the_sealer(tmp_path: Path) -> None:
    """An I/O error on the audit log as the writer logs segment_sealed drops the event (counted, records stay
    acknowledged); the sealer, finding it missing once the segment is sealed, writes it again."""
    cfg, root = write_config(tmp_path), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        append = store._audit.append
        failed: list[bytes] = []

        def eio_on_the_first_sealed_event(bodies: list[bytes]) -> None:
            if not failed and b'"event_type":"segment_sealed"' in bodies[0]:
                failed.append(bodies[0])
                raise DurabilityError("_recorder/audit.jsonl", "write", errno.EIO, "Input/output error")
            append(bodies)

        store._audit.append = eio_on_the_first_sealed_event  # type: ignore[method-assign]
        for i in range(3):
            store.record(sample_message(i=i), schema_type="msg", producer="p", pseq=i)
        assert store.sealer.wait_idle(10)
        assert failed and store.events_dropped == 1
    trail = check_trail(root)
    assert trail.problems == [] and trail.events["segment_sealed_recovered"] == 1, trail.summary()
