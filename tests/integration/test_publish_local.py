"""Publication into a local table root: table per MAJOR, a minor's new column, retention keeps what is unpublished."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recorder import Store
from recorder.schema.config import load_config
from recorder.exceptions import StorageFull
from recorder.publish._state import catalog_segments, load_state, lock_publication
from recorder.testing import sample_message

from .fleet_support import need_fleet, record, write_config


def test_minor_adds_a_nullable_column_and_a_new_major_gets_its_own_table(tmp_path: Path) -> None:
    """1.0 and 1.1 records share one table (1.1's field a nullable column); 2.x records go to a3cp_message_v2."""
    need_fleet()
    from deltalake import DeltaTable

    from recorder.publish._service import publish_once

    cfg = write_config(tmp_path / "r.toml", str(tmp_path / "lake"), "rec-local", msg_rotate=10)
    root = tmp_path / "root"
    record(cfg, root, users=1, messages=10, raws=5, version="1.0.1")
    publish_once(str(root), load_config(cfg), show_progress=False)
    with Store(str(cfg), data_root=str(root)) as s:
        for i in range(10):
            s.record(sample_message("user9", "sess9", i, version="1.1.0"), schema_type="a3cp_message")
        for i in range(10):
            s.record(sample_message("user9", "sess9", 100 + i, version="2.0.0"), schema_type="a3cp_message")
        s.end_session("user9", "sess9")
        assert s.sealer.wait_idle(60)
    publish_once(str(root), load_config(cfg), show_progress=False)
    v1 = DeltaTable(str(tmp_path / "lake" / "a3cp_message")).to_pyarrow_table()
    v2 = DeltaTable(str(tmp_path / "lake" / "a3cp_message_v2")).to_pyarrow_table()
    assert sorted(set(v1.column("schema_version").to_pylist())) == ["1.0.1", "1.1.0"]
    assert set(v2.column("schema_version").to_pylist()) == {"2.0.0"} and v2.num_rows == 10
    record_type = v1.schema.field("record").type
    new = {record_type.field(i).name for i in range(record_type.num_fields)}
    old_rows = [r for r in v1.column("record").to_pylist() if r["schema_version"] == "1.0.1"]
    added = new - set(old_rows[0]) if old_rows else set()
    assert not added  # every row has every column: the older rows hold null in the 1.1 fields
    assert v1.schema.names[:6] == ["user_id", "session_id", "timestamp", "recorder_id", "segment", "seq"]
    assert all(isinstance(r["record_id"], str) and len(r["record_id"]) == 36 for r in old_rows)


def test_retention_and_delete_oldest_keep_unpublished_segments(tmp_path: Path) -> None:
    """Retention and delete_oldest pass over unpublished segments; storage_full then names the backlog."""
    extra = ""
    cfg = write_config(tmp_path / "r.toml", str(tmp_path / "lake"), "rec-keep", msg_rotate=10, extra=extra)
    text = cfg.read_text().replace('rotate_records = 10\n', 'rotate_records = 10\nmax_bytes = 60000\n'
                                   'on_limit = "delete_oldest"\nretention_s = 0.001\n', 1)
    cfg.write_text(text)
    root = tmp_path / "root"
    with Store(str(cfg), data_root=str(root)) as s:
        with pytest.raises(StorageFull) as err:
            for i in range(400):
                s.record(sample_message("user1", "sess1", i), schema_type="a3cp_message")
        assert s.sealer.retention(1e12) == 0
    assert "wait for publication" in err.value.reason
    assert all(m.get("number") for m in catalog_segments(str(root)))
    assert load_state(str(root))["tables"] == {}


def test_publish_refuses_while_the_publication_lock_is_held(tmp_path: Path) -> None:
    """`recorder publish` exits 2 while another publisher holds the lock, and names the holder."""
    cfg = write_config(tmp_path / "r.toml", str(tmp_path / "lake"), "rec-lock")
    root = tmp_path / "root"
    record(cfg, root, users=1, messages=5, raws=0)
    fd = lock_publication(str(root))
    try:
        r = subprocess.run([sys.executable, "-m", "recorder", "publish", str(root), "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120)
    finally:
        import os

        os.close(fd)
    assert r.returncode == 2, r.stderr
    assert "publication lock" in r.stderr


def test_duckdb_reads_the_tables_through_the_pyarrow_dataset(tmp_path: Path) -> None:
    """The docs/FLEET.md recipe: DuckDB over DeltaTable.to_pyarrow_dataset(), filtered by user (file pruning)."""
    need_fleet()
    import duckdb
    from deltalake import DeltaTable

    from recorder.publish._service import publish_once

    cfg = write_config(tmp_path / "r.toml", str(tmp_path / "lake"), "rec-duck", msg_rotate=10)
    root = tmp_path / "root"
    record(cfg, root, users=2, messages=10, raws=5)
    publish_once(str(root), load_config(cfg), show_progress=False)
    messages = DeltaTable(str(tmp_path / "lake" / "a3cp_message")).to_pyarrow_dataset()
    rows = duckdb.sql("SELECT recorder_id, user_id, count(*) AS n FROM messages WHERE user_id = 'user1' "
                      "GROUP BY ALL").fetchall()
    assert rows == [("rec-duck", "user1", 10)]
