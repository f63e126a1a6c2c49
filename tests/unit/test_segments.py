"""Segments: rotation, session end and idleness, chains across segments, Parquet publication and its
crash recovery, storage limits, disk full, and the catalog rebuilt from manifests."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from test_parquet import assert_file_equals_journal

from recorder import StorageFull, Store, _durable, a3cp, read, verify
from recorder._segcheck import check_segments
from recorder._trail import check_trail
from recorder.catalog import rebuild
from recorder.formats import parquet
from recorder.journal import GENESIS
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp

SESSION = Path("logs/elias01/sess_demo")
MSG = """
[types.msg]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{user_id}/{session_id}/msg_{segment:04d}.jsonl"
%s

[types.msg.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"
"""
PQ = """
[types.pq]
model = "recorder.a3cp:A3CPMessage"
format = "parquet"
path = "logs/{user_id}/{session_id}/pq_{segment:04d}.parquet"
%s

[types.pq.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"
"""


def write_config(directory: Path, msg: str = "rotate_records = 3", pq_: str = "rotate_records = 3",
                 recorder: str = "") -> Path:
    """A config with a jsonl type ``msg`` and a parquet type ``pq``, each with ``{segment:04d}`` in its file name."""
    path = directory / "recorder.toml"
    settings = recorder if "min_free_bytes" in recorder else "min_free_bytes = 0\n" + recorder
    path.write_text(f"[recorder]\n{settings}\n" + MSG % msg + PQ % pq_)
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_bytes().splitlines()]


def manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_bytes()))


def manifests(directory: Path, prefix: str) -> list[dict[str, Any]]:
    return [manifest(p) for p in sorted(directory.glob(f"{prefix}_*.manifest.json"))]


def pseqs(root: Path, schema_type: str) -> list[int]:
    return [e["pseq"] for e in read(root, schema_type=schema_type)]


def read_verify(root: Path) -> list[str]:
    """recorder.verify's problems (journals and segments) as text."""
    return [str(p) for p in verify([root])[1]]


def catalog_state(root: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """The catalog folded as the Catalog applies it: path -> ('live' | 'deleted', latest manifest)."""
    state: dict[str, tuple[str, dict[str, Any]]] = {}
    for e in lines_of(root / "_recorder" / "catalog.jsonl")[1:]:
        m = e["manifest"]
        state[m["path"]] = ("deleted" if e["op"] == "delete" else "live", m)
    return state


def wait_for(pred: Callable[[], bool], timeout: float, what: str, poke: Callable[[], Any] = lambda: None) -> None:
    """Wait until ``pred()`` holds (calling ``poke`` between tries), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        poke()
        if pred():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def no_fault_hook() -> Iterator[None]:
    yield
    _durable.set_fault_hook(None)


# -- rotation ------------------------------------------------------------------------------

def test_rotation_under_load_keeps_every_record_exactly_once(tmp_path: Path) -> None:
    """Hundreds of records over two users' sessions, rotated by count and by bytes, read back once each in order."""
    cfg = write_config(tmp_path, msg='rotate_records = 7\ndurability = "os"',
                       pq_='rotate_bytes = 6000\ndurability = "os"')
    root = tmp_path / "data"
    acked: dict[str, list[int]] = {"msg": [], "pq": []}
    with Store(cfg, data_root=root) as store:
        for i in range(300):
            user, session = ("elias01", "sess_a") if i % 3 else ("mara02", "sess_b")
            for t in ("msg", "pq"):
                store.record(sample_message(user, session, i), schema_type=t, producer=f"prod-{t}", pseq=i)
                acked[t].append(i)
    for t in ("msg", "pq"):
        envs = list(read(root, schema_type=t))
        assert [e["pseq"] for e in envs] == acked[t]  # every record once, in insertion order
        assert [e["seq"] for e in envs] == sorted(e["seq"] for e in envs)
    for user, session, n in (("elias01", "sess_a", 200), ("mara02", "sess_b", 100)):
        d = root / "logs" / user / session
        ms = manifests(d, "msg")
        assert [m["segment"] for m in ms] == list(range(len(ms)))
        assert all(m["records"] == 7 for m in ms)
        open_part = lines_of(d / f"msg_{len(ms):04d}.jsonl")[1:]
        assert sum(m["records"] for m in ms) + len(open_part) == n
        pms = manifests(d, "pq")
        assert all(m["state"] == "converted" for m in pms)
        for m in pms:  # within rotate_bytes, and sealed because the next ~1.5 KB record did not fit
            assert 6000 - 2000 < m["bytes"] <= 6000
            assert pq.ParquetFile(root / m["parquet"]["path"]).metadata.num_rows == m["records"]
        ranges = [(m["first_seq"], m["last_seq"]) for m in ms]
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))  # segments never overlap
    assert check_segments(str(root)) == []


def test_rotation_by_bytes_seals_when_the_next_record_would_pass_the_limit(tmp_path: Path) -> None:
    """A segment never passes rotate_bytes: it is sealed when the next record would take it past the limit."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, msg="rotate_bytes = 5000"), data_root=root) as store:
        for i in range(12):
            store.record(sample_message(i=i), schema_type="msg", pseq=i)
    d = root / SESSION
    ms = manifests(d, "msg")
    assert len(ms) >= 2
    for m in ms:
        data = (root / m["path"]).read_bytes()
        after = (d / f"msg_{m['segment'] + 1:04d}.jsonl").read_bytes().split(b"\n")[1]  # the next one's first record
        assert len(data) <= 5000 < len(data) + len(after) + 1


def test_manifest_lists_every_producer_in_the_segment_in_process_writers_included(tmp_path: Path) -> None:
    """producers maps each producer with a record in the segment to its highest pseq; an in-process
    writer's records (pseq 0) list it with 0."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, msg="rotate_records = 4"), data_root=root) as store:
        store.record(sample_message(i=0), schema_type="msg")
        store.record(sample_message(i=1), schema_type="msg", producer="p1", pseq=7)
        store.record(sample_message(i=2), schema_type="msg", producer="p1", pseq=9)
        store.record(sample_message(i=3), schema_type="msg", producer="other")
        store.sealer.wait_idle(10)
    assert manifest(root / SESSION / "msg_0000.manifest.json")["producers"] == {"inproc": 0, "p1": 9, "other": 0}


def test_rotation_by_age_seals_an_old_segment(tmp_path: Path) -> None:
    """rotate_age_s seals an open segment once it is that old (housekeeping) and on the next append."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, msg="rotate_age_s = 3600"), data_root=root) as store:
        store.record(sample_message(i=0), schema_type="msg")
        store.writers["msg"].housekeeping(time.monotonic() + 10)
        assert not (root / SESSION / "msg_0000.manifest.json").exists()
        store.writers["msg"].housekeeping(time.monotonic() + 3601)
        store.record(sample_message(i=1), schema_type="msg")
        store.sealer.wait_idle(10)
        assert manifest(root / SESSION / "msg_0000.manifest.json")["records"] == 1
        assert (root / SESSION / "msg_0001.jsonl").is_file()


# -- sessions ------------------------------------------------------------------------------

def test_session_end_seals_that_sessions_segments_in_every_type(tmp_path: Path) -> None:
    """Store.end_session seals the open segments of one session only; its next record starts a new segment."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, msg="rotate_records = 100", pq_="rotate_records = 100"),
               data_root=root) as store:
        for i in range(2):
            for t in ("msg", "pq"):
                store.record(sample_message("elias01", "sess_a", i), schema_type=t)
                store.record(sample_message("elias01", "sess_b", i), schema_type=t)
        assert store.end_session("elias01", "sess_a") == 2
        store.sealer.wait_idle(10)
        a, b = root / "logs/elias01/sess_a", root / "logs/elias01/sess_b"
        assert manifest(a / "msg_0000.manifest.json")["records"] == 2
        assert manifest(a / "pq_0000.manifest.json")["state"] == "converted"
        assert not list(b.glob("*.manifest.json"))
        store.record(sample_message("elias01", "sess_a", 5), schema_type="msg")
        assert len(lines_of(a / "msg_0001.jsonl")) == 2
    assert check_segments(str(root)) == []


def test_an_idle_session_is_sealed_by_housekeeping(tmp_path: Path) -> None:
    """With session_idle_s, Store.housekeeping seals a segment nothing was appended to for that long."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, msg="session_idle_s = 0.05", pq_="session_idle_s = 0.05"),
               data_root=root) as store:
        store.record(sample_message(i=0), schema_type="msg")
        store.record(sample_message(i=0), schema_type="pq")
        store.housekeeping()  # not idle yet
        assert not list((root / SESSION).glob("*.manifest.json"))
        wait_for(lambda: (root / SESSION / "pq_0000.parquet").is_file()
                 and (root / SESSION / "msg_0000.manifest.json").is_file(),
                 10, "both segments to be sealed", poke=store.housekeeping)
    assert check_segments(str(root)) == []


# -- chains across segments ----------------------------------------------------------------

def test_segments_of_a_stream_are_chained_across_a_restart(tmp_path: Path) -> None:
    """Each segment's header prev is the previous segment's last hash, also when a restart comes between."""
    cfg, root = write_config(tmp_path), tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        for i in range(4):  # segment 0 sealed, segment 1 open with one record
            store.record(sample_message(i=i), schema_type="msg")
    with Store(cfg, data_root=root) as store:  # continues segment 1, then seals it and starts 2
        for i in range(4, 9):
            store.record(sample_message(i=i), schema_type="msg")
    d = root / SESSION
    journals = sorted(d.glob("msg_*.jsonl"))
    assert [p.name for p in journals] == ["msg_0000.jsonl", "msg_0001.jsonl", "msg_0002.jsonl"]
    prev = GENESIS
    for n, path in enumerate(journals):
        lines = lines_of(path)
        assert lines[0]["segment"] == n and lines[0]["prev"] == prev
        for a, b in zip(lines, lines[1:]):
            assert b["prev"] == a["h"]
        prev = lines[-1]["h"]
    for n, m in enumerate(manifests(d, "msg")):
        assert m["prev_head"] == lines_of(journals[n])[0]["prev"]
        assert m["chain_head"] == lines_of(journals[n])[-1]["h"]
    assert check_segments(str(root)) == []


def test_parquet_segments_stay_chained_after_their_journals_are_gone(tmp_path: Path) -> None:
    """Converted segments keep the links in their manifests: prev_head of n is chain_head of n-1."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path), data_root=root) as store:
        for i in range(10):
            store.record(sample_message(i=i), schema_type="pq")
    d = root / SESSION
    ms = manifests(d, "pq")
    assert len(ms) == 3 and not (d / "pq_0000.jsonl").exists()
    assert ms[0]["prev_head"] == GENESIS
    assert all(b["prev_head"] == a["chain_head"] for a, b in zip(ms, ms[1:]))
    assert lines_of(d / "pq_0003.jsonl")[0]["prev"] == ms[2]["chain_head"]


# -- Parquet equals the journal ------------------------------------------------------------

EXAMPLES = """
[recorder]
min_free_bytes = 0

[defaults]
format = "parquet"
keep_journal = true
rotate_records = 4
path = "logs/{schema_type}/{user_id}/seg_{segment:03d}.parquet"

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
[types.a3cp_message.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
max_record_bytes = 1048576

[types.audit_event]
model = "recorder.a3cp:AuditEvent"

[types.feedback_log]
model = "recorder.a3cp:FeedbackLogEntry"

[types.base]
model = "recorder.a3cp:A3CPBase"
"""


def record_every_example(store: Store, n: int) -> None:
    for i in range(n):
        # 1.0 only in the first segment, mixed in the second, 1.1 only in the third
        version = "1.1.0" if (i >= 8 or (4 <= i < 8 and i % 2)) else "1.0.1"
        msg = sample_message(i=i, version=version)
        if version == "1.1.0":
            msg["model_version"] = "gesture-v3"
        store.record(msg, schema_type="a3cp_message", tags={"run": str(i)} if i % 3 == 0 else None)
        store.record(sample_raw_action(i=i, frames=2), schema_type="raw_action")
        store.record(dict(sample_audit(i=i), detail={"n": i}), schema_type="audit_event")
        store.record({k: v for k, v in sample_audit(i=i).items() if k in a3cp.A3CPBase.model_fields},
                     schema_type="base")
        store.record({"entry_id": str(uuid.UUID(int=i + 1)), "timestamp": timestamp(i), "user_id": "elias01",
                      "session_id": "sess_demo", "intent_label": "drink", "label_status": "confirmed",
                      "user_response": "Yes", "label_correction": None},
                     schema_type="feedback_log", record_id=str(uuid.UUID(int=100 + i)), schema_version="1.0.0")


@pytest.mark.parametrize("schema_type", ["a3cp_message", "raw_action", "audit_event", "feedback_log", "base"])
def test_sealed_parquet_equals_its_journal_for_every_example_schema(tmp_path: Path, schema_type: str) -> None:
    """Every segment the sealer published holds its journal's records value for value (journals kept to compare)."""
    (tmp_path / "r.toml").write_text(EXAMPLES)
    root = tmp_path / "data"
    with Store(tmp_path / "r.toml", data_root=root) as store:
        record_every_example(store, 12)
        model_for = store.registry.get(schema_type).model_for
    d = root / "logs" / schema_type / "elias01"
    files = sorted(d.glob("seg_*.parquet"))
    assert len(files) == 3
    for f in files:
        envs = [e for e in lines_of(f.with_suffix(".jsonl"))[1:]]
        assert_file_equals_journal(f, envs, model_for)
        m = manifest(f.with_suffix(".manifest.json"))
        assert m["state"] == "converted" and m["journal_kept"] is True
        assert m["parquet"]["sha256"] == parquet.digest(f)
    assert check_segments(str(root)) == []


def test_segments_of_minor_versions_read_as_one_table(tmp_path: Path) -> None:
    """1.0-only, mixed and 1.1-only segments read as one table; 1.1's new column is null in 1.0 rows."""
    (tmp_path / "r.toml").write_text(EXAMPLES.replace("keep_journal = true", "keep_journal = false"))
    root = tmp_path / "data"
    with Store(tmp_path / "r.toml", data_root=root) as store:
        record_every_example(store, 12)
    files = sorted((root / "logs" / "a3cp_message" / "elias01").glob("seg_*.parquet"))
    assert [json.loads(pq.read_schema(f).metadata[b"recorder.schema_versions"]) for f in files] == [
        ["1.0.1"], ["1.0.1", "1.1.0"], ["1.1.0"]]
    assert "model_version" not in pq.read_schema(files[0]).field("record").type.names
    table = parquet.read_table(files)
    assert table.num_rows == 12
    rows = table.to_pylist()
    assert [r["record"]["model_version"] for r in rows] == [
        "gesture-v3" if r["schema_version"] == "1.1.0" else None for r in rows]
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)


# -- crash at each named step of sealing -----------------------------------------------------

#: The durable steps the sealer thread takes for one segment, in order (test_sealing_steps_are_these checks it).
JSONL_STEPS = [
    "manifest:after_write", "manifest:before_rename", "manifest:before_dir_fsync",
    "catalog_seal:after_write", "catalog_seal:before_fsync", "catalog_seal:after_fsync",
]
PARQUET_STEPS = JSONL_STEPS + [
    "parquet:before_fsync", "parquet:before_rename", "parquet:before_dir_fsync",
    "manifest_converted:after_write", "manifest_converted:before_rename", "manifest_converted:before_dir_fsync",
    "catalog_convert:after_write", "catalog_convert:before_fsync", "catalog_convert:after_fsync",
]


def sealer_points(cfg: Path, root: Path, schema_type: str) -> list[str]:
    """The fault points the sealer thread passes while it seals one segment (in-process)."""
    seen: list[str] = []

    def hook(point: str) -> None:
        if threading.current_thread().name == "sealer":
            seen.append(point)

    _durable.set_fault_hook(hook)
    try:
        with Store(cfg, data_root=root) as store:
            for i in range(3):
                store.record(sample_message(i=i), schema_type=schema_type, producer="p", pseq=i)
            store.sealer.wait_idle(10)
    finally:
        _durable.set_fault_hook(None)
    return seen


@pytest.mark.parametrize("schema_type,steps", [("msg", JSONL_STEPS), ("pq", PARQUET_STEPS)])
def test_sealing_steps_are_these(tmp_path: Path, schema_type: str, steps: list[str]) -> None:
    """The crash tests below kill the sealer at each of these points; they follow the code."""
    assert sealer_points(write_config(tmp_path), tmp_path / "data", schema_type) == [s.split(":")[1] for s in steps]


def kill_sealer_at(cfg: Path, root: Path, schema_type: str, step: int, records: int) -> int:
    """Record in a forked child whose sealer SIGKILLs the child at its ``step``-th fault point; returns the status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 3  # the step was never reached
        try:
            count = [0]
            acked = threading.Event()

            def hook(point: str) -> None:
                if threading.current_thread().name == "sealer":
                    acked.wait(10)  # every record acknowledged first: none may be lost then
                    if count[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    count[0] += 1

            _durable.set_fault_hook(hook)
            store = Store(cfg, data_root=root)
            for i in range(records):
                store.record(sample_message(i=i), schema_type=schema_type, producer="p", pseq=i)
            acked.set()
            store.sealer.wait_idle(10)
        except BaseException:  # noqa: BLE001 - reported through the exit status
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def crash_and_recover(tmp_path: Path, schema_type: str, step: int) -> Path:
    """Kill the sealer at ``step`` while it seals segment 0 (3 records, 1 more in segment 1), then reopen
    the store, record 3 more (sealing segment 1) and close it."""
    cfg, root = write_config(tmp_path), tmp_path / "data"
    status = kill_sealer_at(cfg, root, schema_type, step, 4)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child exit status {status}"
    with Store(cfg, data_root=root) as store:
        for i in range(4, 7):
            store.record(sample_message(i=i), schema_type=schema_type, producer="p", pseq=i)
        store.sealer.wait_idle(10)
        assert store.sealer.errors == []
    return root


STEP_IDS = [f"{i}-{s}" for i, s in enumerate(PARQUET_STEPS)]


@pytest.fixture(scope="module")
def recovered(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], Path]:
    """crash_and_recover, once per (type, step) for the whole module (the tests only read the result)."""
    cache: dict[tuple[str, int], Path] = {}

    def get(schema_type: str, step: int) -> Path:
        if (schema_type, step) not in cache:
            cache[schema_type, step] = crash_and_recover(tmp_path_factory.mktemp(f"{schema_type}{step}"),
                                                         schema_type, step)
        return cache[schema_type, step]

    return get


@pytest.mark.parametrize("step", range(len(PARQUET_STEPS)), ids=STEP_IDS)
def test_a_kill_while_publishing_parquet_recovers_every_record_once(
        recovered: Callable[[str, int], Path], step: int) -> None:
    """Killed at any sealing step: after a restart both segments are converted, the Parquet files are whole,
    the journals are gone and every record is there once."""
    root = recovered("pq", step)
    d = root / SESSION
    for n in (0, 1):
        m = manifest(d / f"pq_{n:04d}.manifest.json")
        assert m["state"] == "converted" and m["records"] == 3
        assert pq.ParquetFile(d / f"pq_{n:04d}.parquet").metadata.num_rows == 3  # a footer: whole
        assert not (d / f"pq_{n:04d}.jsonl").exists()
    for f in root.rglob("*.parquet"):
        pq.ParquetFile(f)  # no footerless Parquet under any final name
    assert pseqs(root, "pq") == list(range(7))
    table = parquet.read_table(sorted(d.glob("pq_*.parquet")))
    assert table.column("pseq").to_pylist() == list(range(6))


@pytest.mark.parametrize("step", range(len(JSONL_STEPS)), ids=STEP_IDS[: len(JSONL_STEPS)])
def test_a_kill_while_sealing_a_journal_recovers_every_record_once(
        recovered: Callable[[str, int], Path], step: int) -> None:
    """Killed at any step of sealing a jsonl segment: after a restart both segments have manifests and
    every record is there once."""
    root = recovered("msg", step)
    d = root / SESSION
    for n in (0, 1):
        assert manifest(d / f"msg_{n:04d}.manifest.json")["records"] == 3
    assert pseqs(root, "msg") == list(range(7))


def _verify_params(steps: list[str], bugs: dict[int, str]) -> list[Any]:
    del bugs  # every step recovers now (the bugs these marked were fixed)
    return [pytest.param(i, id=f"{i}-{s}") for i, s in enumerate(steps)]


CATALOG_SKIPS_SEAL = (
    "BUG (segments.Sealer.seal): a kill after the manifest is renamed into place but before "
    "catalog.add('seal') leaves a jsonl segment the catalog never hears of: on restart seal() finds the manifest "
    "and skips catalog.add, so the catalog stays out of date (search, read and retention miss the segment) "
    "until `recorder catalog --rebuild`")
CATALOG_SKIPS_CONVERT = (
    "BUG (segments.Sealer.seal/_convert): a kill after the 'converted' manifest is renamed into place but "
    "before catalog.add('convert') leaves the catalog saying state 'sealed' at the journal's path forever: "
    "on restart seal() sees state 'converted', skips _convert (and its catalog entry) and removes the journal; "
    "delete_oldest and retention then never delete that segment (they skip unconverted Parquet segments)")


@pytest.mark.parametrize("step", _verify_params(PARQUET_STEPS, {11: CATALOG_SKIPS_CONVERT}))
def test_a_recording_killed_while_publishing_parquet_verifies_clean_after_restart(
        recovered: Callable[[str, int], Path], step: int) -> None:
    """After the restart finished the conversion, manifests, Parquet digests, chain links and catalog agree,
    and no temp file is left."""
    assert check_segments(str(recovered("pq", step))) == []


@pytest.mark.parametrize("step", _verify_params(JSONL_STEPS, {2: CATALOG_SKIPS_SEAL}))
def test_a_recording_killed_while_sealing_a_journal_verifies_clean_after_restart(
        recovered: Callable[[str, int], Path], step: int) -> None:
    """After the restart resealed the segment, manifests, links and catalog agree, and no temp file is left."""
    assert check_segments(str(recovered("msg", step))) == []


# -- storage limits ------------------------------------------------------------------------------

@pytest.mark.parametrize("schema_type,step", [("pq", i) for i in range(len(PARQUET_STEPS))]
                         + [("msg", i) for i in range(len(JSONL_STEPS))],
                         ids=[f"pq-{i}" for i in STEP_IDS] + [f"msg-{i}" for i in STEP_IDS[: len(JSONL_STEPS)]])
def test_a_recording_killed_while_the_sealer_works_keeps_a_complete_audit_trail(
        recovered: Callable[[str, int], Path], schema_type: str, step: int) -> None:
    """Killed at any sealer step: each of the two segments has exactly one segment_sealed event, matching its manifest."""
    trail = check_trail(recovered(schema_type, step))
    assert trail.problems == [] and trail.manifests == 2, trail.summary()


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


# -- the catalog -----------------------------------------------------------------------------------

def rebuilt_recording(tmp_path: Path) -> tuple[Path, Path, list[tuple[dict[str, Any], bool]]]:
    """A recording with seals, conversions, retention and limit deletions; returns (config, root, the
    catalog's search(include_deleted=True) as (manifest, deleted))."""
    cfg = write_config(tmp_path, msg='rotate_records = 2\nmax_bytes = 9000\non_limit = "delete_oldest"',
                       pq_="rotate_records = 3\nretention_s = 0.001")
    root = tmp_path / "data"
    with Store(cfg, data_root=root) as store:
        for i in range(20):
            store.record(sample_message(i=i), schema_type="msg")
            store.record(sample_message(i=i), schema_type="pq")
        store.sealer.wait_idle(10)
        assert store.sealer.retention(time.time() + 60) > 0
        for i in range(20, 26):
            store.record(sample_message(i=i), schema_type="pq")
        store.sealer.wait_idle(10)
        before = [(s.manifest, s.deleted is not None) for s in store.catalog.search(include_deleted=True)]
    return cfg, root, before


def test_rebuild_reproduces_the_catalog(tmp_path: Path) -> None:
    """After seals, conversions, retention and limit deletions, a catalog rebuilt from manifests and tombstones
    holds the same segments in the same states, and a store reopened over it finds the same live segments."""
    cfg, root, before = rebuilt_recording(tmp_path)
    original = catalog_state(root)
    assert {k for k, _ in original.values()} == {"live", "deleted"}
    assert rebuild(root, {}) == len(original)
    assert catalog_state(root) == original
    with Store(cfg, data_root=root) as store:
        after = [s.manifest for s in store.catalog.search()]
    assert after == [m for m, deleted in before if not deleted]
    assert check_segments(str(root)) == []
    assert read_verify(root) == []


def test_a_rebuilt_catalog_still_lists_deleted_segments(tmp_path: Path) -> None:
    """search(include_deleted=True) gives the same segments before and after a rebuild."""
    cfg, root, before = rebuilt_recording(tmp_path)
    rebuild(root, {})
    with Store(cfg, data_root=root) as store:
        after = [(s.manifest, s.deleted is not None) for s in store.catalog.search(include_deleted=True)]
    assert after == before
