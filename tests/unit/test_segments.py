"""Segments: rotation, session end and idleness, chains across segments, Parquet equal to its journal,
and the catalog rebuilt from manifests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from parquet_support import assert_file_equals_journal
from segment_support import SESSION, catalog_state, lines_of, manifest, manifests, read_verify, write_config

from recorder import Store, a3cp, read
from recorder.reading._segcheck import check_segments
from recorder.storage.catalog_log import rebuild
from recorder.storage.formats import parquet
from recorder.storage.journal import GENESIS
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp


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
