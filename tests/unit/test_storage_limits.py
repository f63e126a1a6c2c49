"""Storage limits (max_bytes with reject or delete_oldest, max_total_bytes), a full disk (ENOSPC injected,
a tiny tmpfs) and the free-space watermark."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from segment_support import SESSION, catalog_state, lines_of, pseqs, read_verify, write_config

from recorder import StorageFull, Store
from recorder.storage import _durable
from recorder.reading._segcheck import check_segments
from recorder.testing import sample_message


@pytest.fixture
def no_fault_hook() -> Iterator[None]:
    yield
    _durable.set_fault_hook(None)

# -- storage limits ------------------------------------------------------------------------------
def data_bytes(root: Path, prefix: str) -> int:
    """Bytes of a type's data files (journals and Parquet files) under ``root``."""
    return sum(p.stat().st_size for pattern in (f"{prefix}_*.jsonl", f"{prefix}_*.parquet")
               for p in root.rglob(pattern))


def fill_until_full(store: Store, schema_type: str, limit: int = 200) -> tuple[list[int], StorageFull]:
    """Record until the store refuses; returns the acknowledged pseqs and the refusal."""
    acked: list[int] = []
    for i in range(limit):
        try:
            store.record(sample_message(i=i), schema_type=schema_type, producer="p", pseq=i)
        except StorageFull as e:
            return acked, e
        acked.append(i)
    pytest.fail(f"{limit} records were all accepted")


def test_max_bytes_with_reject_refuses_with_a_clear_reason_and_writes_nothing(tmp_path: Path) -> None:
    """types.X.max_bytes with on_limit = reject: StorageFull names the key and the limit, the refused record
    is nowhere, other types go on, and the refusal holds across a restart."""
    cfg, root = write_config(tmp_path, msg="rotate_records = 3\nmax_bytes = 8000"), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        acked, err = fill_until_full(store, "msg")
        assert (err.path, err.reason) == ("msg", "types.msg.max_bytes (8000 bytes) reached")
        assert "max_bytes" in str(err)
        before = {p: p.read_bytes() for p in root.rglob("msg_*")}
        with pytest.raises(StorageFull):
            store.record(sample_message(i=999), schema_type="msg", producer="p", pseq=999)
        assert {p: p.read_bytes() for p in root.rglob("msg_*")} == before
        store.record(sample_message(i=0), schema_type="pq")  # another type is not affected
    assert pseqs(root, "msg") == acked
    assert not list(root.rglob("msg_*.deleted.json"))  # reject never deletes
    with Store(cfg, data_root=root) as store:
        with pytest.raises(StorageFull, match="max_bytes"):
            store.record(sample_message(i=1000), schema_type="msg")
    assert check_segments(str(root)) == []


USAGE_IGNORES_HEADERS = (
    "BUG (writer.TypeWriter.write/journal, segments.Usage): storage usage counts only appended record lines: "
    "a new segment's header line (~640 bytes with the env block) is never added, and admit() estimates "
    "len(body) + 140 per line while a committed chained line adds 161 bytes; so a type's journals exceed max_bytes")


def test_max_bytes_with_reject_bounds_the_bytes_on_disk(tmp_path: Path) -> None:
    """After a refusal, the type's data files hold no more than max_bytes."""
    cfg, root = write_config(tmp_path, msg="rotate_records = 3\nmax_bytes = 8000"), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        fill_until_full(store, "msg")
    assert data_bytes(root, "msg") <= 8000


def test_max_total_bytes_refuses_every_type(tmp_path: Path) -> None:
    """recorder.max_total_bytes with the default policy refuses records of any type once reached."""
    cfg, root = write_config(tmp_path, recorder="max_total_bytes = 12000"), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        acked, err = fill_until_full(store, "msg")
        assert err.reason == "recorder.max_total_bytes (12000 bytes) reached"
        with pytest.raises(StorageFull, match="max_total_bytes"):
            store.record(sample_message(i=0), schema_type="pq")
    assert pseqs(root, "msg") == acked and pseqs(root, "pq") == []


def delete_oldest_recording(tmp_path: Path, n: int = 30) -> Path:
    cfg = write_config(tmp_path, msg='rotate_records = 2\nmax_bytes = 8000\non_limit = "delete_oldest"')
    root = tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        for i in range(n):  # never refused: old segments make room
            store.record(sample_message(i=i), schema_type="msg", producer="p", pseq=i)
    return root


def test_delete_oldest_deletes_sealed_segments_oldest_first_with_tombstones(tmp_path: Path) -> None:
    """delete_oldest removes whole sealed segments from the oldest on, each with a tombstone and a catalog
    delete entry carrying its digest; the open segment stays, the newest records stay, verify is clean."""
    root = delete_oldest_recording(tmp_path)
    d = root / SESSION
    tombs = sorted(d.glob("msg_*.deleted.json"))
    assert tombs, "nothing was deleted"
    assert [p.name for p in tombs] == [f"msg_{n:04d}.deleted.json" for n in range(len(tombs))]  # oldest first
    deleted = {json.loads(p.read_bytes())["manifest"]["path"]: json.loads(p.read_bytes()) for p in tombs}
    state = catalog_state(root)
    for path, tomb in deleted.items():
        assert state[path][0] == "deleted"
        assert state[path][1]["sha256"] == tomb["manifest"]["sha256"]
        assert tomb["reason"] == "storage limit: types.msg.max_bytes (8000 bytes) reached"
        assert not (root / path).exists() and not (root / path.replace(".jsonl", ".manifest.json")).exists()
    gone = sum(t["manifest"]["records"] for t in deleted.values())
    assert pseqs(root, "msg") == list(range(gone, 30))  # exactly the records of deleted segments are gone
    events = [e for e in lines_of(root / "_recorder" / "audit.jsonl")[1:] if e["event_type"] == "segment_deleted"]
    assert [e["record"]["sha256"] for e in events] == [t["manifest"]["sha256"] for t in deleted.values()]
    assert check_segments(str(root)) == []
    assert read_verify(root) == []


def test_delete_oldest_keeps_the_type_within_max_bytes(tmp_path: Path) -> None:
    """With delete_oldest, the type's data on disk stays within max_bytes however much is recorded."""
    root = delete_oldest_recording(tmp_path)
    assert data_bytes(root, "msg") <= 8000


def test_delete_oldest_never_deletes_the_open_segment(tmp_path: Path) -> None:
    """With nothing sealed to delete, delete_oldest refuses like reject and leaves the open segment whole."""
    cfg = write_config(tmp_path, msg='rotate_records = 1000\nmax_bytes = 5000\non_limit = "delete_oldest"')
    root = tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        acked, err = fill_until_full(store, "msg")
        assert "types.msg.max_bytes (5000 bytes) reached" in err.reason
    assert pseqs(root, "msg") == acked and acked
    assert not list(root.rglob("*.deleted.json"))


def test_delete_oldest_deletes_only_converted_parquet_segments(tmp_path: Path) -> None:
    """A parquet type deletes published segments (Parquet file, manifest) and leaves a tombstone for each."""
    cfg = write_config(tmp_path, pq_='rotate_records = 2\nmax_bytes = 30000\non_limit = "delete_oldest"')
    root = tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        for i in range(40):
            store.record(sample_message(i=i), schema_type="pq", producer="p", pseq=i)
            store.sealer.wait_idle(10)  # conversions done: the deletable segments are known
    d = root / SESSION
    tombs = sorted(d.glob("pq_*.deleted.json"))
    assert tombs and [p.name for p in tombs] == [f"pq_{n:04d}.deleted.json" for n in range(len(tombs))]
    for t in tombs:
        assert json.loads(t.read_bytes())["manifest"]["state"] == "converted"
        assert not t.with_name(t.name.replace(".deleted.json", ".parquet")).exists()
    gone = sum(json.loads(t.read_bytes())["manifest"]["records"] for t in tombs)
    assert pseqs(root, "pq") == list(range(gone, 40))
    assert check_segments(str(root)) == []


# -- a full disk ---------------------------------------------------------------------------------

def enospc_at(point: str, nth: int = 1) -> Callable[[str], None]:
    """A fault hook raising ENOSPC the ``nth`` time the writing (main) thread passes ``point``, once."""
    seen = [0]

    def hook(p: str) -> None:
        if p == point and threading.current_thread() is threading.main_thread():
            seen[0] += 1
            if seen[0] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return hook


def test_enospc_while_writing_a_record_is_refused_and_leaves_no_torn_record(
        tmp_path: Path, no_fault_hook: None) -> None:
    """ENOSPC from a record's write is StorageFull, never acknowledged, cut back; the next record and a
    restart find a whole journal."""
    cfg, root = write_config(tmp_path, msg="rotate_records = 100"), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        store.record(sample_message(i=0), schema_type="msg", producer="p", pseq=0)
        _durable.set_fault_hook(enospc_at("after_write"))
        with pytest.raises(StorageFull, match=os.strerror(errno.ENOSPC)) as err:
            store.record(sample_message(i=1), schema_type="msg", producer="p", pseq=1)
        _durable.set_fault_hook(None)
        assert err.value.path.endswith("msg_0000.jsonl")
        store.record(sample_message(i=2), schema_type="msg", producer="p", pseq=2)
    with Store(cfg, data_root=root):
        pass
    assert pseqs(root, "msg") == [0, 2]
    assert read_verify(root) == []


def test_enospc_from_fdatasync_is_refused_and_leaves_no_torn_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fdatasync failing with ENOSPC (delayed allocation, thin volumes) is StorageFull and the batch is cut."""
    cfg, root = write_config(tmp_path, msg="rotate_records = 100"), tmp_path / "data"
    real = os.fdatasync
    with Store(cfg, data_root=root) as store:
        store.record(sample_message(i=0), schema_type="msg", producer="p", pseq=0)

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fdatasync", full)
        with pytest.raises(StorageFull, match="fdatasync"):
            store.record(sample_message(i=1), schema_type="msg", producer="p", pseq=1)
        monkeypatch.setattr(os, "fdatasync", real)
        store.record(sample_message(i=2), schema_type="msg", producer="p", pseq=2)
    with Store(cfg, data_root=root):
        pass
    assert pseqs(root, "msg") == [0, 2]
    assert read_verify(root) == []


def test_enospc_injected_before_fsync_is_refused_and_leaves_no_torn_record(
        tmp_path: Path, no_fault_hook: None) -> None:
    """ENOSPC injected at before_fsync behaves as ENOSPC from fdatasync: StorageFull, cut back, whole journal."""
    cfg, root = write_config(tmp_path, msg="rotate_records = 100"), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        store.record(sample_message(i=0), schema_type="msg", producer="p", pseq=0)
        _durable.set_fault_hook(enospc_at("before_fsync"))
        try:
            with pytest.raises(StorageFull):
                store.record(sample_message(i=1), schema_type="msg", producer="p", pseq=1)
        finally:
            _durable.set_fault_hook(None)
            store.record(sample_message(i=2), schema_type="msg", producer="p", pseq=2)
    with Store(cfg, data_root=root):
        pass
    assert pseqs(root, "msg") == [0, 2]
    assert read_verify(root) == []


def test_enospc_while_sealing_the_segment_a_record_filled_is_never_a_false_refusal(
        tmp_path: Path, no_fault_hook: None) -> None:
    """A record either is acknowledged and stored, or refused and absent, even when sealing its segment fails."""
    cfg, root = write_config(tmp_path), tmp_path / "data"
    refused = []
    with Store(cfg, data_root=root) as store:
        for i in range(2):
            store.record(sample_message(i=i), schema_type="msg", producer="p", pseq=i)
        _durable.set_fault_hook(enospc_at("after_write", nth=2))  # 1: the record, 2: the .head checkpoint
        try:
            store.record(sample_message(i=2), schema_type="msg", producer="p", pseq=2)
        except StorageFull:
            refused.append(2)
        _durable.set_fault_hook(None)
    stored = pseqs(root, "msg")
    assert [p for p in refused if p in stored] == []


def test_enospc_while_the_sealer_appends_to_the_catalog_leaves_it_whole(
        tmp_path: Path, no_fault_hook: None) -> None:
    """A full disk during sealing fails that seal (retried at restart) and never breaks the catalog's chain."""
    cfg, root = write_config(tmp_path), tmp_path / "data"
    seen = [0]

    def hook(p: str) -> None:
        if threading.current_thread().name == "sealer" and p == "after_write":
            seen[0] += 1
            if seen[0] == 2:  # 1: the manifest, 2: the catalog's seal entry
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with Store(cfg, data_root=root) as store:
        _durable.set_fault_hook(hook)
        for i in range(7):
            store.record(sample_message(i=i), schema_type="msg", producer="p", pseq=i)
        store.sealer.wait_idle(10)
        _durable.set_fault_hook(None)
        assert len(store.sealer.errors) == 1
    with Store(cfg, data_root=root) as store:
        store.sealer.wait_idle(10)
    assert pseqs(root, "msg") == list(range(7))
    assert read_verify(root) == []


# -- a tiny tmpfs --------------------------------------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only); skipped where mounting is not permitted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def grow(mnt: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True, capture_output=True, timeout=10)


def test_a_really_full_disk_refuses_records_and_loses_no_acknowledged_one(tmp_path: Path, tiny_fs: Path) -> None:
    """On a 2 MiB tmpfs the kernel's ENOSPC is StorageFull; once space returns the store reopens with exactly
    the acknowledged records and verifies clean."""
    cfg, root = write_config(tmp_path, msg="rotate_records = 100000"), tiny_fs / "data"
    store = Store(cfg, data_root=root)
    try:
        acked, err = fill_until_full(store, "msg", limit=5000)
        assert os.strerror(errno.ENOSPC) in err.reason
    finally:
        grow(tiny_fs, "16m")  # close() writes checkpoints: give it room
        store.close()
    with Store(cfg, data_root=root):
        pass
    assert pseqs(root, "msg") == acked
    assert read_verify(root) == []


def test_the_free_space_watermark_refuses_before_the_disk_is_full(tmp_path: Path, tiny_fs: Path) -> None:
    """Below recorder.min_free_bytes records are refused with that reason, and nothing is written."""
    (tiny_fs / "filler").write_bytes(b"\0" * (1500 << 10))  # about 550 kB stay free
    cfg = write_config(tmp_path, recorder="min_free_bytes = 700000")
    root = tiny_fs / "data"
    with Store(cfg, data_root=root) as store:
        with pytest.raises(StorageFull, match=r"free disk space below recorder.min_free_bytes \(700000 bytes\)"):
            store.record(sample_message(i=0), schema_type="msg")
    assert pseqs(root, "msg") == []


def test_the_free_space_watermark_holds_under_a_burst(tmp_path: Path, tiny_fs: Path) -> None:
    """Records written as fast as possible are refused at the watermark, not by ENOSPC."""
    cfg = write_config(tmp_path, msg="rotate_records = 100000", recorder="min_free_bytes = 1000000")
    store = Store(cfg, data_root=tiny_fs / "data")
    try:
        _, err = fill_until_full(store, "msg", limit=5000)
    finally:
        grow(tiny_fs, "16m")
        store.close()
    assert "min_free_bytes" in err.reason

