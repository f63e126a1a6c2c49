"""Power loss, simulated: crash states built from the durability op log recover every acknowledged record.

A SIGKILL leaves the page cache intact, so it cannot show a missing fsync.
Here ``recorder.storage._durable`` logs every write, fdatasync, fsync, truncate,
create, rename, unlink and directory fsync of a Store's workload (rotation
and a Parquet seal included), with a marker after each ``Store.record``
returned (the acknowledgement). For a crash after op k the checker builds
what a disk may hold then:

- each file as of its last sync before k, and what was written after it
  absent, all there, torn at a 512 B or a 4 KiB boundary, or zero-filled
  (its size reached the disk, its data did not);
- each directory as of its last fsync, plus its entry changes since then
  (creates, renames, unlinks): none, all, the first few (a journaling file
  system persists them in order), or any of them.

It writes the state into a fresh directory, opens a Store on it (recovery,
sealing resumed), and checks that every record acknowledged before op k is
there; the producer then resends what is missing (records it was never
acknowledged), and every record must be there exactly once, and verify
clean. Two negative controls make the same checker fail: acknowledging
without fdatasync, and not fsyncing the directory after creating a journal.

The number of states tried scales with RECORDER_EXAMPLES_SCALE.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from unit_support import scaled

from recorder.storage import _durable
from recorder import read, verify
from recorder.store import Store
from recorder.testing import sample_message, sample_raw_action

CONFIG = """\
[recorder]
min_free_bytes = 0

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.jsonl"
rotate_records = 5

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.parquet"
max_record_bytes = 1048576
rotate_records = 3
"""
#: 7 messages (one sealed segment) and 4 actions (one Parquet file), interleaved
WORKLOAD = [("a3cp_message", 0), ("a3cp_message", 1), ("raw_action", 100), ("a3cp_message", 2),
            ("raw_action", 101), ("a3cp_message", 3), ("a3cp_message", 4), ("raw_action", 102),
            ("a3cp_message", 5), ("raw_action", 103), ("a3cp_message", 6)]
CONTENT = ("synced", "all", "torn512", "torn4k", "zero")
#: (file content, directory entries) of the states tried at every crash point; "mixed" draws per file
VARIANTS = [("synced", "none"), ("all", "all"), ("torn512", "some"), ("torn4k", "some"), ("zero", "all"),
            ("mixed", "any"), ("mixed", "some")]


def _record(stype: str, i: int) -> dict[str, Any]:
    return sample_raw_action("u1", "s1", i, frames=2) if stype == "raw_action" else sample_message("u1", "s1", i)


# -- the model of a disk ------------------------------------------------------------------------------
@dataclass
class _File:
    data: bytearray = field(default_factory=bytearray)  # what the page cache holds
    synced: bytes = b""  # what its last fsync/fdatasync made durable


@dataclass
class _Dir:
    entries: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> ("f"|"d", id), as of now
    synced: dict[str, tuple[str, int]] = field(default_factory=dict)  # as of its last fsync
    pending: list[tuple[Any, ...]] = field(default_factory=list)  # entry changes since then, in order


def _apply_entry(entries: dict[str, tuple[str, int]], change: tuple[Any, ...]) -> None:
    kind = change[0]
    if kind == "add":
        entries[change[1]] = change[2]
    elif kind == "rename":
        if change[1] in entries:
            entries[change[2]] = entries.pop(change[1])
    elif kind == "unlink":
        entries.pop(change[1], None)


class Disk:
    """Replays the op log; ``state`` is what a power loss at the current point may leave."""

    def __init__(self) -> None:
        self.files: dict[int, _File] = {}
        self.dirs: dict[int, _Dir] = {}
        self.file_of: dict[int, int] = {}  # inode -> current file id (inode numbers are reused)
        self.root = -1
        self.acked: list[tuple[str, str]] = []  # (schema type, record_id), in acknowledgement order

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "root":
            self.root = op[1]
            self.dirs.setdefault(op[1], _Dir())
        elif kind == "mkdir":
            self.dirs.setdefault(op[3], _Dir())
            self._change(op[1], ("add", op[2], ("d", op[3])))
        elif kind == "create":
            fid = len(self.files) + 1
            self.files[fid] = _File()
            self.file_of[op[3]] = fid
            self._change(op[1], ("add", op[2], ("f", fid)))
        elif kind == "write":
            f = self.files[self.file_of[op[1]]]
            offset, data = op[2], op[3]
            if len(f.data) < offset:
                f.data.extend(b"\0" * (offset - len(f.data)))
            f.data[offset:offset + len(data)] = data
        elif kind == "truncate":
            f = self.files[self.file_of[op[1]]]
            del f.data[op[2]:]
            f.data.extend(b"\0" * (op[2] - len(f.data)))
        elif kind == "sync":
            f = self.files[self.file_of[op[1]]]
            f.synced = bytes(f.data)
        elif kind == "rename":
            self._change(op[1], ("rename", op[2], op[3]))
        elif kind == "unlink":
            self._change(op[1], ("unlink", op[2]))
        elif kind == "dirsync":
            d = self.dirs[op[1]]
            for change in d.pending:
                _apply_entry(d.synced, change)
            d.pending.clear()
        elif kind == "mark" and op[1] == "ack":
            self.acked.append(op[2])

    def _change(self, dir_ino: int, change: tuple[Any, ...]) -> None:
        d = self.dirs[dir_ino]
        _apply_entry(d.entries, change)
        d.pending.append(change)

    def state(self, content: str, entries: str, rng: random.Random) -> dict[str, bytes | None]:
        """Relative path -> file bytes (None for a directory) of one possible crash state."""
        out: dict[str, bytes | None] = {}
        views: dict[int, dict[str, tuple[str, int]]] = {}
        for ino, d in self.dirs.items():
            if entries == "any":  # each change independently (a rename without its source does nothing)
                changes = [c for c in d.pending if rng.random() < 0.5]
            else:  # a prefix: none, all, or "some" drawn at random
                keep = {"none": 0, "all": len(d.pending)}.get(entries, rng.randint(0, len(d.pending)))
                changes = d.pending[:keep]
            view = dict(d.synced)
            for change in changes:
                _apply_entry(view, change)
            views[ino] = view

        def walk(ino: int, prefix: str) -> None:
            for name, (kind, ident) in sorted(views[ino].items()):
                path = prefix + name
                if kind == "d":
                    out[path] = None
                    walk(ident, path + "/")
                else:
                    out[path] = _content(self.files[ident], content, rng)

        if self.root in views:
            walk(self.root, "")
        return out


def _content(f: _File, policy: str, rng: random.Random) -> bytes:
    if policy == "mixed":
        policy = rng.choice(CONTENT)
    synced, now = f.synced, bytes(f.data)
    if policy == "synced" or now == synced:
        return synced
    if policy == "all" or not now.startswith(synced):  # not an append since the sync: all or nothing
        return now
    if policy == "zero":
        return synced + b"\0" * (len(now) - len(synced))
    block = 512 if policy == "torn512" else 4096
    cuts = range((len(synced) // block + 1) * block, len(now), block)
    return now[: rng.choice(cuts)] if cuts else synced


# -- recording a workload and checking crash states ----------------------------------------------------
def record_workload(root: Path, config: Path) -> list[tuple[Any, ...]]:
    """Run WORKLOAD through a Store with the op log on; returns the log (with an ack marker per record)."""
    _durable.start_oplog()
    try:
        store = Store(config, data_root=root)
        try:
            for stype, i in WORKLOAD:
                rec = _record(stype, i)
                store.record(rec, schema_type=stype)
                _durable.oplog_mark("ack", (stype, rec["record_id"]))
            assert store.sealer.wait_idle(30), "the sealer did not finish"
        finally:
            log = _durable.stop_oplog()
            store.close()
    finally:
        _durable.stop_oplog()
    return log


@dataclass
class Report:
    """What the checker tried and what it found."""

    crash_points: int = 0
    states: int = 0  # distinct states recovered
    failures: list[str] = field(default_factory=list)

    def lost(self) -> list[str]:
        return [f for f in self.failures if "acknowledged record lost" in f]


def _stored(root: Path) -> Counter[Any]:
    return Counter((e["schema_type"], e.get("record_id")) for e in read(root))


def recover(state: dict[str, bytes | None], root: Path, config: Path) -> tuple[list[str], Counter[Any]]:
    """Materialise ``state`` at ``root``, recover it as a restart and the producer would, and check it.

    Recovery is a Store opened on the state (torn tails cut, seals resumed);
    then the producer resends what is missing (the records it was never
    acknowledged; a resend that is already on disk the router would drop),
    and the Store closes. Returns the problems found and how often each
    (schema type, record_id) was stored before the resend.
    """
    root.mkdir(parents=True)
    mine = f".tmp-{os.getpid()}"
    for rel, data in sorted(state.items()):
        # Temp files of the recording Store carry this pid: name them as a dead process's.
        path = root / (rel.replace(mine, ".tmp-1") if rel.endswith(mine) else rel)
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)
    stored: Counter[Any] = Counter()
    try:
        store = Store(config, data_root=root)
        try:
            if not store.sealer.wait_idle(30):  # resumed seals move records into Parquet files
                return ["recovery: the sealer did not finish"], stored
            stored = _stored(root)
            for stype, i in WORKLOAD:
                rec = _record(stype, i)
                if not stored[(stype, rec["record_id"])]:
                    store.record(rec, schema_type=stype)
            idle = store.sealer.wait_idle(30)
        finally:
            store.close()
        if not idle:
            return ["recovery: the sealer did not finish"], stored
        again = _stored(root)
        _, problems = verify([root])
    except Exception as e:  # noqa: BLE001 - a recovery that breaks is the finding
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                            for f in reversed(traceback.extract_tb(e.__traceback__)[-4:]))
        return [f"recovery failed: {type(e).__name__}: {e} (at {where})"], stored
    out = [f"verify: {p}" for p in problems]
    out += [f"record {key} stored {n} times" for key, n in again.items() if n > 1]
    out += [f"record ({stype}, {i}) missing after the resend" for stype, i in WORKLOAD
            if not again[(stype, _record(stype, i)["record_id"])]]
    return out, stored


def check(log: list[tuple[Any, ...]], config: Path, scratch: Path, seed: int, *, draws: int = 1,
          stop_at_first: bool = False) -> Report:
    """Build crash states after every op, recover each distinct one, check the acknowledged records.

    Every crash point gets VARIANTS, whose last (each file's content and each
    directory's prefix drawn at random) is drawn ``draws`` times.
    """
    rng = random.Random(seed)
    disk = Disk()
    seen: set[str] = set()
    report = Report()
    variants = VARIANTS + VARIANTS[-1:] * (draws - 1)
    for k in range(len(log) + 1):
        if k:
            disk.apply(log[k - 1])
        report.crash_points += 1
        for content, entries in variants:
            state = disk.state(content, entries, rng)
            # the same bytes with more records acknowledged is a new case
            digest = hashlib.sha256(repr((len(disk.acked), sorted(state.items()))).encode()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            report.states += 1
            root = scratch / f"state-{report.states:05d}"
            problems, stored = recover(state, root, config)
            acked = list(disk.acked)
            problems += [f"acknowledged record lost: {key}" for key in acked if stored[key] == 0]
            shutil.rmtree(root, ignore_errors=True)
            if problems:
                report.failures += [f"crash after op {k}/{len(log)} {log[k - 1][:3] if k else ()!r}, "
                                    f"{content}/{entries} ({len(acked)} acknowledged): {p}" for p in problems]
                if stop_at_first and report.lost():
                    return report
    return report


# -- the tests ------------------------------------------------------------------------------------------
@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory for crash states, on tmpfs when there is one (recovery fsyncs a lot)."""
    parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="powerloss-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "powerloss.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def _seed() -> int:
    return int(os.environ.get("RECORDER_TEST_SEED", "0") or 0)


def test_op_log_records_every_durable_step_of_the_workload(scratch: Path, config: Path) -> None:
    """The op log holds the workload's creates, appends, fdatasyncs, renames, unlinks, directory fsyncs and one ack per record, and replaying it gives the files on disk."""
    root = scratch / "data"
    log = record_workload(root, config)
    kinds = Counter(op[0] for op in log)
    for kind in ("root", "mkdir", "create", "write", "sync", "rename", "unlink", "dirsync"):
        assert kinds[kind] > 0, f"no {kind} in the op log: {kinds}"
    assert sum(op[0] == "mark" and op[1] == "ack" for op in log) == len(WORKLOAD)
    assert _durable.stop_oplog() == [] and _durable._oplog is None, "the log is off again"
    disk = Disk()
    for op in log:
        disk.apply(op)
    replay = {rel: data for rel, data in disk.state("all", "all", random.Random(0)).items() if data is not None}
    written = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for rel, data in replay.items():
        if rel.endswith(".jsonl") and not rel.startswith("_recorder/"):
            assert written[rel][: len(data)] == data, f"{rel}: the replayed file differs from the disk"
    assert any(rel.endswith(".parquet") for rel in replay), sorted(replay)


def test_every_acknowledged_record_survives_a_power_loss_at_any_op(
        scratch: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After a simulated power loss at every op of the workload (unsynced data absent, torn, zero-filled; unsynced directory entries present or absent), recovery keeps every acknowledged record exactly once and verify is clean."""
    log = record_workload(scratch / "data", config)
    report = check(log, config, scratch, _seed(), draws=scaled(1))
    with capsys.disabled():
        print(f"\ntest_powerloss: {len(log)} ops logged, {report.crash_points} crash points, "
              f"{report.states} distinct crash states recovered, {len(report.failures)} problems")
    assert report.crash_points > 100 and report.states > 100, report
    assert report.failures == [], "\n".join(report.failures[:20])


def test_checker_catches_an_acknowledgement_before_fdatasync(
        scratch: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: with fdatasync skipped (so records are acknowledged before they are durable), the checker reports a lost acknowledged record."""
    monkeypatch.setattr(_durable, "sync", lambda fd, label: None)
    log = record_workload(scratch / "data", config)
    monkeypatch.undo()
    report = check(log, config, scratch, _seed(), stop_at_first=True)
    assert report.lost(), f"the checker missed the missing fdatasync ({report.states} states)"


def test_checker_catches_a_missing_directory_fsync_after_a_create(
        scratch: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: with no directory fsync after a journal is created, the checker reports a lost acknowledged record."""
    def open_append_without_dir_fsync(dir_fd: int, name: str, label: str) -> tuple[int, bool]:
        try:
            fd = os.open(name, _durable._APPEND_FLAGS | os.O_EXCL, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            return os.open(name, _durable._APPEND_FLAGS & ~os.O_CREAT, dir_fd=dir_fd), False
        _durable._note("create", _durable._ino(dir_fd), name, _durable._ino(fd))  # and no os.fsync(dir_fd)
        return fd, True

    monkeypatch.setattr(_durable, "open_append", open_append_without_dir_fsync)
    log = record_workload(scratch / "data", config)
    monkeypatch.undo()
    report = check(log, config, scratch, _seed(), stop_at_first=True)
    assert report.lost(), f"the checker missed the missing directory fsync ({report.states} states)"
