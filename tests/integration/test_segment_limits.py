"""Segment limits hold when a restarted recorder takes a client's whole backlog at once.

A client keeps recording while the recorder is down (SIGKILLed); the new
recorder gets the backlog resent in batches far larger than a segment. No
segment may then hold more than ``rotate_records`` records, or more bytes than
``rotate_bytes`` (unless one record alone needs more), and the audit log has
one ``segment_sealed`` event per sealed segment.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from recorder import Client
from recorder.storage._trail import check_trail, segment_sizes
from recorder.testing import sample_message, sample_raw_action

from .service_support import Procs, Proc, assert_verified, check_exactly_once, stats

CONFIG = """\
[recorder]
min_free_bytes = 0

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.jsonl"
rotate_records = 20

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.parquet"
max_record_bytes = 1048576
rotate_records = 8
rotate_bytes = 12000
"""
LIMITS = {"a3cp_message": (20, 0), "raw_action": (8, 12000)}


def _recorder(procs: Procs, root: Path, config: Path) -> Proc:
    procs.roots.add(str(root))
    p = procs.spawn("recorder", ["-m", "recorder.router", "--data-root", str(root), "--config", str(config)])
    p.first_ready = p.next_ready()
    return p


def test_a_backlog_resent_after_a_restart_is_split_at_every_segment_limit(
        procs: Procs, clients: Callable[..., Client], tmp_path: Path) -> None:
    """300 messages and 100 landmark sequences recorded while the recorder was down arrive in batches larger than a segment; every segment stays within rotate_records and rotate_bytes, every record is stored once in order, and each sealed segment has its audit event."""
    root, config = tmp_path / "data", tmp_path / "limits.toml"
    config.write_text(CONFIG, encoding="utf-8")
    rec = _recorder(procs, root, config)
    client = clients(root, config=str(config), timeout=60)
    for i in range(5):
        client.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
    client.flush(timeout=30)
    rec.signal(signal.SIGKILL)
    rec.wait(10)
    for i in range(5, 305):  # the backlog: buffered by the client while no recorder runs
        client.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
        if i % 3 == 0:
            client.record(sample_raw_action("user01", "sess01", i, frames=3), schema_type="raw_action")
    rec2 = _recorder(procs, root, config)
    client.flush(timeout=90)
    by_type = stats(root)["types"]
    rec2.signal(signal.SIGTERM)
    assert rec2.wait(60) == 0, rec2.describe()

    for t, (max_records, _) in LIMITS.items():  # the backlog came in batches larger than a segment
        assert by_type[t]["batch_max"] > max_records, (t, by_type[t])
    sizes = segment_sizes(root)
    for t, (max_records, max_bytes) in LIMITS.items():
        assert len(sizes[t]) > 3, sizes[t]
        over = [(p, r, b) for p, r, b in sizes[t] if r > max_records or (max_bytes and b > max_bytes and r > 1)]
        assert over == [], f"{t}: segments over rotate_records={max_records} / rotate_bytes={max_bytes}: {over}"
    check_exactly_once(root, [{"producer": client.producer, "acked": client.acked, "rejected": []}], per_type=True)
    assert_verified(root)
    trail = check_trail(root)
    assert trail.problems == [] and trail.manifests >= 20, trail.summary()
