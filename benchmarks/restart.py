"""Restart to accepting after single, spaced SIGKILLs (the soak measures rapid ones).

``python -m benchmarks restart`` starts ``python -m recorder run`` on a
fresh data root, and a producer (one ``recorder.Client`` in this process)
that records ``a3cp_message`` at ``--rate`` with ``wait=True``, so each
call returns when its record is durable. After ``--stable`` seconds of
that (30 s resets the supervisor's backoff, so each kill meets a recorder
that ran stably), it SIGKILLs the recorder process and measures, from the
kill: the supervisor's next READY line (restart to accepting) and the next
record the producer sees durable (the producer's outage). The recorder's
own start-up work for exact de-duplication (``dedup.start_s`` in its
stats: loading the checkpoint and reading the active files back) is
reported beside them. ``--kills`` times.

    python -m benchmarks restart                       # 3 kills, 31 s apart, ~2 min
    python -m benchmarks restart --kills 1 --stable 5  # quick look (backoff may not be reset)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._common import (default_data_parent, machine_info, markdown_table, progress, recorder_stats,
                      spawn, stop_server, wait_line, write_results)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("restart", help="restart to accepting after spaced SIGKILLs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs (default 3)")
    p.add_argument("--stable", type=float, default=31.0, help="seconds of stable run before each kill (default 31)")
    p.add_argument("--rate", type=float, default=200.0, help="records/s of the producer (default 200)")
    p.add_argument("--dir", help="parent of the temporary data root (default: benchmarks/results/tmp)")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/restart-<time>.json)")
    p.set_defaults(func=run)


def _producer(root: str, rate: float, durable: list[float], stop: threading.Event) -> None:
    """Record with wait=True at ``rate``; note the monotonic time each record was seen durable."""
    from recorder import Client, RecorderError
    from recorder.testing import sample_message

    c = Client(data_root=root, user_id="user01", session_id="sess01", timeout=60, connect_timeout=60)
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        i += 1
        try:
            c.record(sample_message("user01", "sess01", i), schema_type="a3cp_message", wait=True)
            durable.append(time.monotonic())
        except RecorderError as e:
            progress(f"producer: {e}")
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    c.close(timeout=30)


def run(args: argparse.Namespace) -> int:
    parent = Path(args.dir) if args.dir else default_data_parent()
    tmp = tempfile.mkdtemp(prefix="restart-", dir=parent)
    root = os.path.join(tmp, "data")
    sup, ready = None, {}
    stop = threading.Event()
    durable: list[float] = []
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    try:
        sup = spawn(["-m", "recorder", "run", "--data-root", root])
        lines = sup.lines
        ready = json.loads(wait_line(lines, "READY ", 60, "the recorder")[6:])
        t = threading.Thread(target=_producer, args=(root, args.rate, durable, stop), daemon=True)
        t.start()
        for k in range(1, args.kills + 1):
            time.sleep(args.stable)
            seen = len(durable)
            killed = time.monotonic()
            os.kill(ready["pid"], signal.SIGKILL)
            ready = json.loads(wait_line(lines, "READY ", 60, "the restarted recorder")[6:])
            accepting = time.monotonic() - killed
            deadline = time.monotonic() + 60
            while len(durable) <= seen or durable[-1] <= killed + 1e-3:
                if time.monotonic() > deadline:
                    raise RuntimeError("no record durable within 60 s of the kill")
                time.sleep(0.001)
            first = next(x for x in durable[seen:] if x > killed)
            st = recorder_stats(ready["control"])
            row = {"kill": k, "accepting_s": round(accepting, 3), "next_durable_s": round(first - killed, 3),
                   "dedup_start_s": st.get("dedup", {}).get("start_s"),
                   "dedup_producers": st.get("dedup", {}).get("producers"),
                   "records_before": seen}
            rows.append(row)
            progress(f"kill {k}/{args.kills}: accepting after {accepting:.3f} s, next durable record after "
                     f"{first - killed:.3f} s (dedup start-up {row['dedup_start_s']} s)")
    finally:
        stop.set()
        if sup is not None:
            stop_server(sup)
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {"case": "restart", "settings": vars(args) | {"func": None}, "machine": machine_info(parent),
               "load_before": load_before, "load_after": os.getloadavg(), "kills": rows}
    path = write_results("restart", payload, args.out)
    print(markdown_table(rows, [("kill", "kill"), ("accepting_s", "restart to READY s"),
                                ("next_durable_s", "kill to next durable record s"),
                                ("dedup_start_s", "de-duplication start-up s"), ("records_before", "records before")]))
    print(f"\nload average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; results: {path}")
    return 0
