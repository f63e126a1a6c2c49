"""``python -m benchmarks publish``: publication throughput to a local SeaweedFS, and ack latency with it on and off.

In one run: (1) segments/s and MB/s of ``recorder publish`` for sealed
Parquet segments recorded beforehand; (2) the durable-ack latency of one
producer at 1k records/s into a supervised recorder whose publisher
publishes to the same server (segments seal every 0.5 s), against the same
load with publication off. Needs the fleet extra. Prints one JSON line and
a table; the load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import machine_info, progress, write_results

CASE = "publish"
_TYPES = """
[recorder]
min_free_bytes = 1048576

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
format = "parquet"
path = "data/{{user_id}}/{{session_id}}/{{schema_type}}_{{segment:05d}}.parquet"
rotate_records = {rotate}
"""


def _config(path: Path, rotate: int, store: Any | None, prefix: str) -> Path:
    text = _TYPES.format(rotate=rotate)
    if store is not None:
        text += (f'\n[publish]\ntable_root = "s3://{store.bucket}/{prefix}"\nendpoint = "{store.endpoint}"\n'
                 'allow_http = true\ninterval_s = 0.2\n')
    path.write_text(text)
    return path


def _throughput(base: Path, store: Any, segments: int, rotate: int) -> dict[str, Any]:
    from recorder import Store
    from recorder.schema.config import load_config
    from recorder.publish._service import publish_once
    from recorder.publish._state import catalog_segments, data_bytes
    from recorder.testing import sample_message

    cfg = _config(base / "tp.toml", rotate, store, "throughput")
    root = base / "tp"
    with Store(str(cfg), data_root=str(root)) as s:
        for i in range(segments * rotate):
            s.record(sample_message("u1", "s1", i), schema_type="a3cp_message")
        s.end_session("u1", "s1")
        s.sealer.wait_idle(300)
    size = sum(data_bytes(m) for m in catalog_segments(str(root)))
    t0 = time.monotonic()
    state = publish_once(str(root), load_config(cfg), show_progress=False)
    dt = time.monotonic() - t0
    return {"segments": state["published_now"], "records": segments * rotate, "seconds": round(dt, 3),
            "segments_per_s": round(state["published_now"] / dt, 2), "mb_per_s": round(size / 1e6 / dt, 2)}


def _latency(base: Path, store: Any | None, seconds: float, rate: float) -> dict[str, Any]:
    from recorder import Client
    from recorder.testing import sample_message

    name = "on" if store is not None else "off"
    cfg = _config(base / f"lat-{name}.toml", int(rate / 2), store, "latency")
    root = base / f"lat-{name}"
    env = {**os.environ, **(store.env() if store is not None else {})}
    sup = subprocess.Popen([sys.executable, "-m", "recorder", "run", "--config", str(cfg), "--data-root", str(root),
                            "--log-level", "warning"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert sup.stdout is not None
        while not sup.stdout.readline().startswith("READY "):
            pass
        c = Client(config=str(cfg), data_root=str(root), user_id="u1", session_id="s1")
        t0 = time.monotonic()
        n = int(seconds * rate)
        for i in range(n):
            c.record(sample_message("u1", "s1", i), schema_type="a3cp_message")
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the offered load
        c.flush(timeout=60)
        lat = sorted(ns / 1e6 for ns in c.latencies_ns)
        c.close()
        state = json.loads((root / "_recorder" / "publish.json").read_text()) if store is not None else {}
        return {"publication": name, "records": n, "p50_ms": round(lat[len(lat) // 2], 3),
                "p99_ms": round(lat[int(len(lat) * 0.99)], 3), "max_ms": round(lat[-1], 3),
                "segments_published": state.get("segments", 0)}
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=60)


def run(args: argparse.Namespace) -> int:
    """Run both measurements in this process against one SeaweedFS server."""
    from recorder.publish._seaweed import SeaweedServer

    base = Path(tempfile.mkdtemp(prefix="bench-publish-", dir=args.dir))
    store = SeaweedServer(str(base / "seaweedfs")).start()
    os.environ.update(store.env())  # the in-process publish of the throughput run reads AWS_* like a publisher
    try:
        progress(f"publish: throughput, {args.segments} segments of {args.rotate} records")
        tp = _throughput(base, store, args.segments, args.rotate)
        progress(f"publish: ack latency at {args.rate:g} records/s for {args.seconds:g} s, publication off then on")
        lat = [_latency(base, None, args.seconds, args.rate), _latency(base, store, args.seconds, args.rate)]
    finally:
        store.stop()
    result = {"throughput": tp, "latency": lat, "loadavg": os.getloadavg()}
    print(json.dumps(result))
    write_results(CASE, {"machine": machine_info(base), "results": result}, args.out)
    print(f"publish: {tp['segments']} segments in {tp['seconds']} s: {tp['segments_per_s']} segments/s, "
          f"{tp['mb_per_s']} MB/s")
    for r in lat:
        print(f"ack latency at {args.rate:g} rec/s, publication {r['publication']:<3}: p50 {r['p50_ms']} ms  "
              f"p99 {r['p99_ms']} ms  max {r['max_ms']} ms  ({r['segments_published']} segments published)")
    print(f"load average {' '.join(f'{x:.2f}' for x in result['loadavg'])}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Add the ``publish`` subcommand."""
    p = subparsers.add_parser(CASE, help="publication to a local SeaweedFS: segments/s, MB/s, ack latency on/off",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=40, help="segments published in the throughput run")
    p.add_argument("--rotate", type=int, default=500, help="records per segment in the throughput run")
    p.add_argument("--rate", type=float, default=1000.0, help="records/s offered in the latency runs")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each latency run")
    p.add_argument("--dir", help="parent of the temporary data (default: the system temp directory)")
    p.add_argument("--out", help="results JSON path")
    p.set_defaults(func=run)
