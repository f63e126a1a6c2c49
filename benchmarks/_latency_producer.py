"""One producer process of the latency benchmark: warm up, wait for GO, send paced or unpaced, report."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from array import array
from collections import deque
from collections.abc import Sequence
from typing import Any

SCHEMA_TYPE = "a3cp_message"
POOL = 1024  # distinct records per producer, cycled


def producer(argv: Sequence[str] | None = None) -> int:
    """One producer: warm up, wait for GO on stdin, send, flush, write samples, print a JSON line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.latency --producer")
    ap.add_argument("--producer", action="store_true")
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--config")
    ap.add_argument("--rate", type=float, required=True, help="records/s of this producer; 0: unpaced")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--warmup", type=float, required=True)
    ap.add_argument("--sessions", default="per-producer")
    ap.add_argument("--payload", default="dict")
    ap.add_argument("--phase", type=float, default=0.0, help="start this fraction of a period late (paced)")
    ap.add_argument("--max-pending", type=int, default=0, help="client buffer bound (0: the Client default)")
    ap.add_argument("--samples", required=True, help="path prefix of the .call and .ack sample files")
    a = ap.parse_args(argv)

    from recorder.client import Client
    from recorder.testing import sample_message

    if a.sessions == "shared":
        user, session = "bench", "sess_bench"
    else:
        user, session = f"bench{a.index:02d}", f"sess_bench_{a.index:02d}"
    pool: list[Any] = [sample_message(user, session, i) for i in range(POOL)]
    if a.payload == "model":
        from recorder.a3cp import A3CPMessage

        pool = [A3CPMessage.model_validate(d) for d in pool]
    kw: dict[str, Any] = {"max_pending": a.max_pending} if a.max_pending else {}
    c = Client(config=a.config, data_root=a.data_root, user_id=user, session_id=session,
               source="benchmark", timeout=120, **kw)
    items = itertools.cycle(pool)

    def send(seconds: float, calls: array[int] | None) -> tuple[int, float, int]:
        """Send for ``seconds`` at ``a.rate`` (deadline schedule) or unpaced; (records, max lag s, late)."""
        record, clock, clock_ns = c.record, time.perf_counter, time.perf_counter_ns
        sleep = time.sleep
        count, lag_max, late = 0, 0.0, 0
        t0 = clock()
        end = t0 + seconds
        if a.rate > 0:
            period = 1.0 / a.rate
            t0 += a.phase * period  # producers interleave instead of ticking together
            while True:
                due = t0 + count * period
                if due >= end:
                    break
                now = clock()
                if now < due:
                    sleep(due - now)  # pacing a capture loop, not waiting on a condition
                else:
                    lag = now - due
                    lag_max = max(lag_max, lag)
                    late += lag > period
                rec = next(items)
                s0 = clock_ns()
                record(rec, schema_type=SCHEMA_TYPE)
                s1 = clock_ns()
                if calls is not None:
                    calls.append(s1 - s0)
                count += 1
        else:
            while True:
                for _ in range(256):
                    rec = next(items)
                    s0 = clock_ns()
                    record(rec, schema_type=SCHEMA_TYPE)
                    s1 = clock_ns()
                    if calls is not None:
                        calls.append(s1 - s0)
                count += 256
                if clock() >= end:
                    break
        return count, lag_max, late

    # Warm-up: files created, caches and connections settled; then nothing pending.
    send(a.warmup, None)
    c.flush(timeout=120)
    c.latencies_ns = deque(maxlen=50_000_000)  # only measured records from here on
    counters0 = dict(c.counters)
    print("WARM", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1

    calls = array("q")
    cpu0 = os.times()
    t_start = time.time()
    records, lag_max, late = send(a.seconds, calls)
    t_sent = time.time()
    c.flush(timeout=300)
    t_done = time.time()
    cpu1 = os.times()
    lat = array("q", c.latencies_ns)
    with open(a.samples + ".call", "wb") as f:
        calls.tofile(f)
    with open(a.samples + ".ack", "wb") as f:
        lat.tofile(f)
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    out = {"index": a.index, "producer": c.producer, "records": records, "t_start": t_start, "t_sent": t_sent,
           "t_done": t_done, "lag_max_ms": round(lag_max * 1e3, 3), "late": late,
           "cpu_pct": round(100 * cpu_s / (t_done - t_start), 1), "cpu_s": round(cpu_s, 3),
           "resent": c.counters["resent"] - counters0["resent"],
           "blocked": c.counters["blocked"] - counters0["blocked"]}
    c.close()
    print(json.dumps(out), flush=True)
    return 0
