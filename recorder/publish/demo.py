"""``recorder demo --fleet``: three recorders publish into the same Delta tables on a local SeaweedFS server.

Starts ``weed mini``, three supervised recorders (each with its own data
root, recorder id and producers), SIGKILLs one publisher mid-run (its
supervisor restarts it), waits until every sealed segment is published,
then queries the whole fleet as one dataset and compares it with what the
recorders sealed: ``duplicates 0`` and ``missing 0``, or exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import IO, Any

from ..storage import formats
from ._seaweed import SeaweedServer
from ._state import catalog_segments, load_state, published

__all__ = ["run_fleet_demo"]

_CONFIG = """
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
format = "parquet"
path = "data/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.parquet"
rotate_records = 40

[types.a3cp_message.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.parquet"
max_record_bytes = 1048576
rotate_records = 10

[types.audit_event]
model = "recorder.a3cp:AuditEvent"
path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}.jsonl"

[publish]
table_root = "s3://%s/fleet"
endpoint = "%s"
allow_http = true
recorder_id = "%s"
interval_s = 0.5
backoff_max_s = 2.0
"""
TABLES = ("a3cp_message", "raw_action")


def _pump(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling other processes' progress, within the deadline


def _done(root: str) -> bool:
    tables = load_state(root).get("tables", {})
    return all(published(m, tables) for m in catalog_segments(root) if m["schema_type"] in TABLES)


def run_fleet_demo(args: argparse.Namespace) -> int:
    """Run the fleet demo; 0 when the lake holds every sealed record exactly once."""
    base = os.path.realpath(args.dir or args.data_root or tempfile.mkdtemp(prefix="recorder-fleet-"))
    os.makedirs(base, exist_ok=True)
    print(f"fleet demo in {base}")
    store = SeaweedServer(os.path.join(base, "seaweedfs")).start()
    print(f"SeaweedFS S3 at {store.endpoint} (bucket {store.bucket}; conditional PUT probe passed)")
    env = {**os.environ, **store.env(), "PYTHONUNBUFFERED": "1"}
    sups: list[tuple[str, str, subprocess.Popen[str], list[str]]] = []
    producers: list[subprocess.Popen[str]] = []
    try:
        for i, rid in enumerate(("clinic-a", "classroom-b", "home-c")):
            root = os.path.join(base, rid)
            cfg = os.path.join(base, f"{rid}.toml")
            with open(cfg, "w", encoding="utf-8") as f:
                f.write(_CONFIG % (store.bucket, store.endpoint, rid))
            sup = subprocess.Popen([sys.executable, "-m", "recorder", "run", "--config", cfg, "--data-root", root,
                                    "--log-level", "warning"], stdout=subprocess.PIPE, text=True, env=env)
            lines: list[str] = []
            assert sup.stdout is not None
            threading.Thread(target=_pump, args=(sup.stdout, lines), daemon=True).start()
            sups.append((rid, root, sup, lines))
        for rid, root, sup, lines in sups:
            _wait(lambda: any(ln.startswith("READY ") for ln in lines), 120, f"recorder {rid}")
        print(f"3 recorders ready, {args.producers} producers each for {args.seconds:g} s at 30 fps")
        for n, (rid, root, _sup, _lines) in enumerate(sups):
            cfg = os.path.join(base, f"{rid}.toml")
            for j in range(args.producers):
                producers.append(subprocess.Popen(
                    [sys.executable, "-m", "recorder.demo", "--index", str(10 * n + j), "--data-root", root,
                     "--config", cfg, "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True, env=env))
        time.sleep(args.seconds / 2)  # let traffic and publication flow before the kill
        rid, root, _sup, lines = sups[1]
        pid = [json.loads(ln[10:])["pid"] for ln in lines if ln.startswith("PUBLISHER ")][-1]
        os.kill(pid, signal.SIGKILL)
        print(f"SIGKILL publisher pid {pid} of {rid} mid-run ...")
        _wait(lambda: len([ln for ln in lines if ln.startswith("PUBLISHER ")]) > 1, 60, "the publisher restart")
        print("... its supervisor restarted it (the recorder kept recording)")
        for p in producers:
            p.communicate(timeout=args.seconds + 180)
        _wait(lambda: all(_done(root) for _, root, _, _ in sups), 300, "publication of every sealed segment")
        return _report(store, [(rid, root) for rid, root, _, _ in sups])
    finally:
        for p in producers:
            if p.poll() is None:
                p.kill()
        for _rid, _root, sup, _lines in sups:
            if sup.poll() is None:
                sup.send_signal(signal.SIGTERM)
        for _rid, _root, sup, _lines in sups:
            try:
                sup.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sup.kill()
        store.stop()


def _report(store: SeaweedServer, fleet: list[tuple[str, str]]) -> int:
    import pyarrow as pa
    from deltalake import DeltaTable

    opts = {**store.storage_options(), **store.env()}
    sealed: Counter[tuple[str, str]] = Counter()
    want: set[tuple[str, str, int]] = set()
    for rid, root in fleet:
        for m in catalog_segments(root):
            if m["schema_type"] not in TABLES:
                continue
            t = formats.of(m).read(os.path.join(root, formats.data_path(m)), columns=["seq"])
            sealed[(rid, m["schema_type"])] += t.num_rows
            want.update((rid, m["schema_type"], s) for s in t.column("seq").to_pylist())
    parts = []
    for table in TABLES:
        ds = DeltaTable(f"s3://{store.bucket}/fleet/{table}", storage_options=opts).to_pyarrow_dataset()
        parts.append(ds.to_table(columns=["recorder_id", "schema_type", "seq"]))
    lake = pa.concat_tables(parts)
    print("\none query over the whole fleet (the Delta tables as one pyarrow dataset):")
    counts = lake.group_by(["recorder_id", "schema_type"]).aggregate([("seq", "count")]).sort_by(
        [("recorder_id", "ascending"), ("schema_type", "ascending")])
    print(f"  {'recorder_id':<14}{'schema_type':<16}{'in lake':>9}{'sealed':>9}")
    for row in counts.to_pylist():
        print(f"  {row['recorder_id']:<14}{row['schema_type']:<16}{row['seq_count']:>9}"
              f"{sealed[(row['recorder_id'], row['schema_type'])]:>9}")
    rows = Counter(zip(lake.column("recorder_id").to_pylist(), lake.column("schema_type").to_pylist(),
                       lake.column("seq").to_pylist()))
    dups = sum(n - 1 for n in rows.values() if n > 1)
    missing = len(want - set(rows))
    extra = len(set(rows) - want)
    print(f"records sealed        {sum(sealed.values())}")
    print(f"records in the lake   {lake.num_rows}")
    print(f"duplicates {dups}")
    print(f"missing {missing}")
    if extra:
        print(f"unexpected {extra}")
    ok = dups == 0 and missing == 0 and extra == 0
    print("result                " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1
