"""Segment size limits hold for any batch: a batch that crosses rotate_records or rotate_bytes is split at
the boundary, its rest going to the next segment in the same group commit; a failure cuts every part back."""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import test_powerloss as tp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_powerloss import scratch  # noqa: F401 - the fixture

from recorder import StorageFull, Store, read, verify
from recorder.storage import _durable
from recorder.reading._segcheck import check_segments
from recorder.storage._trail import check_trail, segment_sizes
from recorder.storage._split import fitting, line_bytes
from recorder.storage.journal import Journal
from recorder.protocol import Record
from recorder.testing import sample_message, sample_raw_action
from recorder.schema.validation import encode_record
from recorder.storage.writer import Entry

CONFIG = """\
[recorder]
min_free_bytes = 0

[types.msg]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{user_id}/{session_id}/msg_{segment:04d}.jsonl"
%s

[types.pq]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
max_record_bytes = 1048576
path = "data/{user_id}/{session_id}/pq_{segment:04d}.parquet"
%s
"""
SESSION = Path("logs/elias01/sess_demo")


def write_config(directory: Path, msg: str, pq: str = "rotate_records = 3", hashing: bool = True) -> Path:
    path = directory / "limits.toml"
    text = CONFIG % (msg, pq)
    if not hashing:
        text = text.replace("[types.msg]\n", '[types.msg]\nhash = "none"\n')
    path.write_text(text, encoding="utf-8")
    return path


def batch(store: Store, schema_type: str, records: list[dict[str, Any]], first_pseq: int = 0) -> list[Entry]:
    """Entries as a writer actor hands them to its TypeWriter: accepted, numbered, one batch."""
    out = []
    for k, rec in enumerate(records):
        acc = store.check(Record("p", first_pseq + k, schema_type, encode_record(rec)))
        out.append(Entry(acc, store.seq.take(), time.time_ns(), "p", first_pseq + k))
    return out


def segments(root: Path, schema_type: str) -> list[tuple[str, int, int]]:
    """(journal, records, bytes) of every segment of a type, sealed (from its manifest) or open."""
    return segment_sizes(root).get(schema_type, [])


def test_a_batch_crossing_rotate_records_is_split_at_every_boundary(tmp_path: Path) -> None:
    """30 records in one batch with rotate_records = 7 fill segments 0-3 with exactly 7 and leave 2 in segment 4."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, "rotate_records = 7"), data_root=root) as store:
        store.writers["msg"].write(batch(store, "msg", [sample_message(i=i) for i in range(30)]))
        assert store.sealer.wait_idle(30)
    got = segments(root, "msg")
    assert [(p.rsplit("/", 1)[1], r) for p, r, _ in got] == [
        ("msg_0000.jsonl", 7), ("msg_0001.jsonl", 7), ("msg_0002.jsonl", 7), ("msg_0003.jsonl", 7),
        ("msg_0004.jsonl", 2)]
    assert [e["pseq"] for e in read(root, schema_type="msg")] == list(range(30))
    assert check_segments(str(root)) == [] and verify([root])[1] == []


@pytest.mark.parametrize("hashing", [True, False], ids=["sha256", "unhashed"])
def test_a_batch_crossing_rotate_bytes_is_split_so_no_segment_passes_it(tmp_path: Path, hashing: bool) -> None:
    """One batch of 40 records under rotate_bytes = 5000: every segment within the limit, the next record never fitting."""
    root = tmp_path / "data"
    limit = 5000
    with Store(write_config(tmp_path, f"rotate_bytes = {limit}", hashing=hashing), data_root=root) as store:
        store.writers["msg"].write(batch(store, "msg", [sample_message(i=i) for i in range(40)]))
        assert store.sealer.wait_idle(30)
    got = segments(root, "msg")
    assert len(got) >= 5
    for (path, _, size), (nxt, _, _) in zip(got, got[1:]):
        assert size <= limit, (path, size)
        first = (root / nxt).read_bytes().split(b"\n")[1]  # the next segment's first record did not fit
        assert size + len(first) + 1 > limit - (0 if first.endswith(b',"commit":true}') else 14)
    assert [e["pseq"] for e in read(root, schema_type="msg")] == list(range(40))
    assert verify([root])[1] == []


def test_a_record_larger_than_rotate_bytes_sits_alone_in_its_segment(tmp_path: Path) -> None:
    """A record that alone passes rotate_bytes gets a segment of its own; the records around it do not join it."""
    root = tmp_path / "data"
    big = sample_raw_action(i=1, frames=40)  # ~25 KB
    recs = [sample_raw_action(i=0, frames=1), big, sample_raw_action(i=2, frames=1)]
    with Store(write_config(tmp_path, "rotate_records = 0", "rotate_bytes = 4000"), data_root=root) as store:
        store.writers["pq"].write(batch(store, "pq", recs))
        assert store.sealer.wait_idle(30)
    got = segments(root, "pq")
    assert [r for _, r, _ in got] == [1, 1, 1]
    assert got[0][2] <= 4000 < got[1][2] and got[2][2] <= 4000
    assert [e["pseq"] for e in read(root, schema_type="pq")] == [0, 1, 2]
    assert check_segments(str(root)) == []


def test_a_failure_in_a_later_part_cuts_every_part_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC from the fdatasync of a batch's second segment refuses the whole batch: the first part is cut from
    its segment, the segment the batch started is emptied, and the next batch chains correctly across them."""
    root = tmp_path / "data"
    real = os.fdatasync
    with Store(write_config(tmp_path, "rotate_records = 5"), data_root=root) as store:
        writer = store.writers["msg"]
        writer.write(batch(store, "msg", [sample_message(i=i) for i in range(3)]))
        seg0, seg1 = root / SESSION / "msg_0000.jsonl", root / SESSION / "msg_0001.jsonl"
        before = seg0.stat().st_size

        def fail_second_part(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("msg_0001.jsonl") and os.fstat(fd).st_size > 2000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fail_second_part)
        with pytest.raises(StorageFull):
            writer.write(batch(store, "msg", [sample_message(i=i) for i in range(3, 9)], first_pseq=3))
        monkeypatch.setattr(os, "fdatasync", real)
        assert seg0.stat().st_size == before  # the first part is gone from segment 0 ...
        assert seg1.stat().st_size == 0  # ... and segment 1's header, which chained from it, too
        writer.write(batch(store, "msg", [sample_message(i=i) for i in range(10, 16)], first_pseq=10))
        assert store.sealer.wait_idle(30)
    assert [e["pseq"] for e in read(root, schema_type="msg")] == [0, 1, 2, 10, 11, 12, 13, 14, 15]
    assert [r for _, r, _ in segments(root, "msg")] == [5, 4]
    assert verify([root])[1] == []  # segment 1's new header names segment 0's real chain head


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(20, 3000), min_size=1, max_size=40), records=st.integers(0, 12),
       max_records=st.integers(0, 12), max_bytes=st.sampled_from([0, 1500, 4000, 20000]), hashing=st.booleans())
def test_fitting_takes_the_most_lines_that_keep_a_segment_within_its_limits(
        sizes: list[int], records: int, max_records: int, max_bytes: int, hashing: bool) -> None:
    """fitting() takes as many lines as keep a segment within both limits, at least one into an empty segment,
    counting bytes with the journal's own framing."""
    bodies = [b'{"k":"' + b"x" * n + b'"' for n in sizes]
    size = 600 + 1000 * records  # a header and the records already there

    def total(k: int) -> int:
        return size + sum(line_bytes(b, hashing) for b in bodies[:k]) + (14 if k else 0)

    k = fitting(bodies, 0, records, size, max_records, max_bytes, hashing)
    if max_records:
        assert records + k <= max_records or k == 0
    if records == 0 and max_records != 0 or records == 0 and not max_records:
        assert k >= 1  # an empty segment takes a record, however large
    if max_bytes and k and not (records == 0 and k == 1):
        assert total(k) <= max_bytes
    room = not max_records or records + k < max_records
    if k < len(bodies) and room:  # it stopped because the next line would pass rotate_bytes
        assert max_bytes and total(k + 1) > max_bytes


def test_line_bytes_is_the_length_a_journal_writes(tmp_path: Path) -> None:
    """The framing fitting() counts is the framing Journal.write produces, hashed or not."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for hashing in (True, False):
            j = Journal(fd, f"j{hashing}.jsonl", "j", hashing=hashing, fsync=False)
            j.open({"schema_type": "x"})
            bodies = [b'{"seq":%d,"v":"%s"' % (i, b"y" * i) for i in range(1, 6)]
            before = j.size
            j.write(bodies)
            j.sync()
            want = sum(line_bytes(b, hashing, last=i == 4) for i, b in enumerate(bodies))
            assert j.size - before == want
            j.close()
    finally:
        os.close(fd)


# -- a split batch under power loss (the checker of test_powerloss) ----------------------------------
#: 12 messages in two batches against rotate_records = 5: [5 | 2] then [3 | 2]
SPLIT_WORKLOAD = [("a3cp_message", i) for i in range(12)]
SPLIT_BATCHES = [7, 5]


def record_split_workload(root: Path, config: Path) -> list[tuple[Any, ...]]:
    """SPLIT_WORKLOAD as two batches with the op log on, an ack marker per record after its batch returned."""
    _durable.start_oplog()
    try:
        store = Store(config, data_root=root)
        try:
            k = 0
            for n in SPLIT_BATCHES:
                recs = [tp._record(stype, i) for stype, i in SPLIT_WORKLOAD[k:k + n]]
                store.writers["a3cp_message"].write(batch(store, "a3cp_message", recs, k))
                for rec in recs:
                    _durable.oplog_mark("ack", ("a3cp_message", rec["record_id"]))
                k += n
            assert store.sealer.wait_idle(30)
        finally:
            log = _durable.stop_oplog()
            store.close()
    finally:
        _durable.stop_oplog()
    return log


@pytest.fixture
def split_power_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path) -> tuple[Path, Path]:
    """(config, scratch directory) with test_powerloss's resend list set to SPLIT_WORKLOAD."""
    monkeypatch.setattr(tp, "WORKLOAD", SPLIT_WORKLOAD)
    config = tmp_path / "powerloss.toml"
    config.write_text(tp.CONFIG, encoding="utf-8")
    return config, scratch


def test_a_batch_split_across_segments_survives_a_power_loss_at_any_op(split_power_loss: tuple[Path, Path]) -> None:
    """Power loss at every op of two batches that each fill one segment and start the next: every acknowledged
    record survives once, and every segment's header still names the real head of the one before it."""
    config, scratch_dir = split_power_loss
    log = record_split_workload(scratch_dir / "data", config)
    assert sum(op[0] == "create" and str(op[2]).startswith("a3cp_message_") for op in log) == 3  # segments 1-3
    report = tp.check(log, config, scratch_dir, 0)
    assert report.crash_points > 30 and report.failures == [], "\n".join(report.failures[:10])


def test_power_loss_catches_a_segment_started_before_the_part_it_chains_from_is_durable(
        split_power_loss: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: when the next segment's header chains from the previous part before that part is
    fdatasync'd (synced only with the rest of the batch), a power loss leaves a broken chain the checker reports."""
    config, scratch_dir = split_power_loss
    real = Journal.sync

    def late(self: Journal) -> None:
        if sys._getframe(1).f_code.co_name == "_write_group" and self._pending is not None:
            self.head = self._pending[0]  # the head moves on, the data is not durable yet
            return
        real(self)

    with monkeypatch.context() as m:
        m.setattr(Journal, "sync", late)
        log = record_split_workload(scratch_dir / "data", config)
    report = tp.check(log, config, scratch_dir, 0)
    assert any("continues" in f or "chain" in f for f in report.failures), report


def test_a_segment_filled_by_a_batch_a_kill_cut_short_is_sealed_at_the_next_start(tmp_path: Path) -> None:
    """Killed after a batch filled segment 0 and started segment 1: the next start seals segment 0 (full, and
    followed by a later segment) and continues segment 1, so no segment passes its limit and the chain holds."""
    cfg, root = write_config(tmp_path, "rotate_records = 5"), tmp_path / "data"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            store = Store(cfg, data_root=root)
            real = Journal.write

            def die_in_segment_1(self: Journal, bodies: list[bytes]) -> None:
                if self.name == "msg_0001.jsonl":
                    os.kill(os.getpid(), signal.SIGKILL)  # segment 0's part is durable, segment 1 has its header
                real(self, bodies)

            Journal.write = die_in_segment_1  # type: ignore[method-assign]
            store.writers["msg"].write(batch(store, "msg", [sample_message(i=i) for i in range(7)]))
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert (root / SESSION / "msg_0001.jsonl").exists() and not (root / SESSION / "msg_0000.manifest.json").exists()
    with Store(cfg, data_root=root) as store:
        assert store.sealer.wait_idle(30)
        assert (root / SESSION / "msg_0000.manifest.json").exists()  # sealed at start
        store.writers["msg"].write(batch(store, "msg", [sample_message(i=i) for i in range(5, 13)], first_pseq=5))
        assert store.sealer.wait_idle(30)
    assert [r for _, r, _ in segments(root, "msg")] == [5, 5, 3]
    assert [e["pseq"] for e in read(root, schema_type="msg")] == list(range(13))
    assert verify([root])[1] == [] and check_trail(root).problems == []
