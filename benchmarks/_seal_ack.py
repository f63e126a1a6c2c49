"""The ``seal`` benchmark's ``ack`` case: durable-ack latency at a paced rate, idle and while a segment seals.

One supervised recorder (``python -m recorder run``) on a fresh data root,
with ``raw_action`` as Parquet segments of N records. First N - 1
``raw_action`` records are written and acknowledged (nothing seals yet).
Then one ``Client`` sends ``a3cp_message`` records (~1 KB, fsync'd JSONL)
on a deadline schedule at ``--rate`` for ``--seconds``: the idle window.
Then a second client sends the N-th ``raw_action`` record, which fills the
segment, so the recorder's sealer converts and publishes it, while the same
paced traffic goes on until the Parquet file is in place: the sealing
window. Latency is ``Client.latencies_ns`` (``record()`` to the durable
acknowledgement), which the client appends in ``pseq`` order, so each
latency belongs to the record sent at the same index.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import PACKAGE_DIR

_CONFIG = """
[recorder]
min_free_bytes = 0
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{{user_id}}/{{schema_type}}.jsonl"
[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/{{user_id}}/{{schema_type}}_{{segment:04d}}.parquet"
rotate_records = {records}
max_record_bytes = 1048576
"""


def _percentiles(ns: list[int]) -> dict[str, float]:
    if not ns:
        return {}
    s = sorted(ns)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(len(s) * p / 100))] / 1e6

    return {"n": len(s), "p50": q(50), "p90": q(90), "p99": q(99), "max": s[-1] / 1e6}


def _paced(client: Any, rate: float, until: Any, sent_at: list[int]) -> None:
    """Send a3cp_message records on a deadline schedule until ``until()`` is true."""
    from recorder.testing import sample_message

    period = 1e9 / rate
    start = time.monotonic_ns()
    i = 0
    while not until():
        due = start + int(i * period)
        while (now := time.monotonic_ns()) < due:
            time.sleep(min(0.0005, (due - now) / 1e9))
        sent_at.append(time.monotonic_ns())
        client.record(sample_message("bench", "s1", i), schema_type="a3cp_message")
        i += 1


def one(args: argparse.Namespace) -> int:
    """Run the case in this process and print its JSON line."""
    from recorder import Client
    from recorder.testing import sample_raw_action

    parent = Path(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="seal-ack-", dir=parent))
    root = work / "data"
    cfg = work / "recorder.toml"
    cfg.write_text(_CONFIG.format(records=args.records))
    sup = subprocess.Popen([sys.executable, "-m", "recorder", "run", "--config", str(cfg), "--data-root", str(root)],
                           stdout=subprocess.PIPE, text=True, cwd=PACKAGE_DIR.parent)
    try:
        assert sup.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while not line.startswith("READY ") and time.monotonic() < deadline:
            line = sup.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError("the recorder did not say READY within 60 s")
        filler = Client(config=str(cfg), data_root=str(root), user_id="bench", session_id="s1", source="bench",
                        timeout=120)
        for i in range(args.records - 1):
            filler.record(sample_raw_action("bench", "s1", i), schema_type="raw_action")
        filler.flush(timeout=120)
        c = Client(config=str(cfg), data_root=str(root), user_id="bench", session_id="s1", source="bench",
                   timeout=60)
        load0 = os.getloadavg()
        idle_sent: list[int] = []
        t_end = time.monotonic() + args.seconds
        _paced(c, args.rate, lambda: time.monotonic() >= t_end, idle_sent)
        c.flush(timeout=60)
        idle = list(c.latencies_ns)[-len(idle_sent):]
        c.latencies_ns.clear()
        parquet = list(root.rglob("*.parquet"))
        assert not parquet, f"a segment sealed too early: {parquet}"
        sealing_sent: list[int] = []
        t_seal = time.monotonic_ns()
        filler.record(sample_raw_action("bench", "s1", args.records), schema_type="raw_action")
        done: list[int] = []

        def sealed() -> bool:
            if not done and any(root.rglob("*.parquet")):
                done.append(time.monotonic_ns())
            now = time.monotonic_ns()
            return (bool(done) and now > done[0] + 200_000_000) or now > t_seal + 120_000_000_000

        _paced(c, args.rate, sealed, sealing_sent)
        c.flush(timeout=60)
        lat = list(c.latencies_ns)[-len(sealing_sent):]
        end = done[0] if done else time.monotonic_ns()
        during = [x for t, x in zip(sealing_sent, lat) if t <= end]
        load1 = os.getloadavg()
        filler.close()
        c.close()
    finally:
        sup.terminate()
        sup.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"case": "ack", "rate": args.rate, "records": args.records, "idle_s": args.seconds,
                      "seal_window_ms": (end - t_seal) / 1e6, "idle": _percentiles(idle),
                      "sealing": _percentiles(during), "loadavg_before": load0, "loadavg_after": load1}))
    return 0


def table(r: dict[str, Any]) -> str:
    """A Markdown table of the ack case's result."""
    rows = ["| window | records | p50 ms | p90 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for name in ("idle", "sealing"):
        p = r[name]
        rows.append(f"| {name} | {p.get('n', 0)} | {p.get('p50', 0):.2f} | {p.get('p90', 0):.2f} "
                    f"| {p.get('p99', 0):.2f} | {p.get('max', 0):.2f} |")
    rows.append(f"\nack latency at {r['rate']:g} records/s; the sealing window (seal of {r['records']} raw_action "
                f"records, from the record that filled the segment to its Parquet file) lasted "
                f"{r['seal_window_ms']:.0f} ms")
    return "\n".join(rows)
