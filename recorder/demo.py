"""``recorder demo``: a supervised recorder, several producers, a crash, a verify.

The demo starts ``recorder run`` on the given (or a temporary) data root,
runs producer processes that send 30 fps capture traffic (A3CPMessages,
landmark sequences, audit events and a few invalid records), SIGKILLs the
recorder once mid-run so the supervisor restarts it, stops everything, then
checks the recording: every acknowledged record on disk exactly once, in
each producer's order, every chain verified.
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
from collections import Counter
from typing import Any

from .client import Client
from .exceptions import RecorderUnavailable, RejectedError, UsageError
from .reading.reader import read, verify
from .testing import invalid_samples, sample_audit, sample_message, sample_raw_action


def _percentile(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))]


# -- one producer process ----------------------------------------------------
def produce(index: int, data_root: str, config: str | None, seconds: float, fps: float) -> dict[str, Any]:
    """Send paced capture traffic; return what was sent, acknowledged and rejected."""
    user, session = f"user{index:02d}", f"sess_demo_{index:02d}"
    c = Client(config=config, data_root=data_root, user_id=user, session_id=session, timeout=60)
    bad = invalid_samples(user, session)
    c.record(sample_audit(user, session, "session_start", index), schema_type="audit_event")
    frames = int(seconds * fps)
    every = max(1, frames // (len(bad) + 1))
    t0 = time.monotonic()
    for i in range(frames):
        c.record(sample_message(user, session, i), schema_type="a3cp_message")
        if i % 10 == 0:
            c.record(sample_raw_action(user, session, i), schema_type="raw_action")
        if i % every == every // 2 and bad:
            stype, rec, _why = bad.pop()
            c.record(rec, schema_type=stype)
        delay = t0 + (i + 1) / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing a capture loop, not waiting on a condition
    c.record(sample_audit(user, session, "session_end", index + 1000), schema_type="audit_event")
    rejected: list[tuple[int, str]] = []
    try:
        c.flush(timeout=60)
    except RejectedError as e:
        rejected = [(r[0], r[1]) for r in e.rejections]
    lat = sorted(ns / 1e6 for ns in c.latencies_ns)
    result = {"producer": c.producer, "sent": c.counters["sent"], "acked": c.acked,
              "rejected": rejected, "resent": c.counters["resent"],
              "lat_ms": [_percentile(lat, 50), _percentile(lat, 99), lat[-1] if lat else float("nan")]}
    c.close()
    return result


# -- the orchestrating demo ---------------------------------------------------
def _start_supervisor(root: str, config: str | None) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    cmd = [sys.executable, "-m", "recorder", "run", "--data-root", root, "--log-level", "warning"]
    if config:
        cmd += ["--config", config]
    sup = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    return sup, _next_ready(sup, 60)


def _next_ready(sup: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert sup.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = sup.stdout.readline()
        if not line:
            raise RecorderUnavailable("the supervisor exited before the recorder was ready")
        if line.startswith("READY "):
            ready: dict[str, Any] = json.loads(line[6:])
            return ready
    raise RecorderUnavailable("the recorder did not become ready in time")


def run_demo(args: argparse.Namespace) -> int:
    """Run the whole demo and print its summary; 0 when every check passed."""
    given = args.dir or args.data_root
    if args.dir and args.data_root and os.path.realpath(args.dir) != os.path.realpath(args.data_root):
        raise UsageError("--dir", f"{args.dir!r} differs from --data-root {args.data_root!r}")
    if given and os.path.exists(given) and (not os.path.isdir(given) or os.listdir(given)):
        what = "is not a directory" if not os.path.isdir(given) else "is not empty"
        raise UsageError("--dir", f"{given} {what}: the demo counts every record in its data root, "
                                  "so it needs a new or empty directory")
    root = os.path.realpath(given or tempfile.mkdtemp(prefix="recorder-demo-"))
    print(f"data root: {root}")
    sup, ready = _start_supervisor(root, args.config)
    print(f"recorder ready (pid {ready['pid']}), {args.producers} producers for {args.seconds:g} s at 30 fps")
    producers = [
        subprocess.Popen([sys.executable, "-m", "recorder.demo", "--index", str(i), "--data-root", root,
                          "--seconds", str(args.seconds)] + (["--config", args.config] if args.config else []),
                         stdout=subprocess.PIPE, text=True)
        for i in range(args.producers)
    ]
    restarts = 0
    try:
        time.sleep(args.seconds / 2)  # let traffic flow before the crash
        os.kill(ready["pid"], signal.SIGKILL)
        print(f"SIGKILL recorder pid {ready['pid']} mid-run ...")
        again = _next_ready(sup, 60)
        restarts += 1
        print(f"... supervisor restarted it as pid {again['pid']}")
        results = []
        for p in producers:
            out, _ = p.communicate(timeout=args.seconds + 120)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in producers:
            if p.poll() is None:
                p.kill()
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sup.kill()
    return _report(root, results, restarts)


def _report(root: str, results: list[dict[str, Any]], restarts: int) -> int:
    seen: Counter[tuple[str, int]] = Counter()
    order_ok = True
    last: dict[tuple[str, str], int] = {}
    for e in read(root):
        key = (e["producer"], e["pseq"])
        seen[key] += 1
        k2 = (e["producer"], e["schema_type"])
        if e["pseq"] <= last.get(k2, 0):
            order_ok = False
        last[k2] = e["pseq"]
    sent = sum(r["sent"] for r in results)
    acked = sum(r["acked"] for r in results)
    reasons = Counter(code for r in results for _p, code in r["rejected"])
    rejected = sum(reasons.values())
    missing = 0
    for r in results:
        refused = {p for p, _c in r["rejected"]}
        missing += sum(1 for s in range(1, r["acked"] + 1) if s not in refused and seen[(r["producer"], s)] == 0)
    dups = sum(n - 1 for n in seen.values() if n > 1)
    files, problems = verify([root])
    lat = [r["lat_ms"] for r in results]
    print()
    print(f"records sent          {sent}")
    print(f"acknowledged          {acked}  (durable or rejected)")
    print(f"on disk               {sum(seen.values())}")
    print(f"rejected              {rejected}  ({', '.join(f'{k}={v}' for k, v in sorted(reasons.items()))})")
    print(f"acked but missing     {missing}")
    print(f"duplicates on disk    {dups}")
    print(f"accounted for         {sum(seen.values()) + rejected} of {sent} sent  (on disk + rejected)")
    print(f"per-producer order    {'ok' if order_ok else 'BROKEN'}")
    print(f"recorder restarts     {restarts}  (resent after restart: {sum(r['resent'] for r in results)})")
    print(f"ack latency ms        p50 {max(x[0] for x in lat):.2f}  p99 {max(x[1] for x in lat):.2f}  "
          f"max {max(x[2] for x in lat):.2f}  (worst producer; includes the crash)")
    print(f"verify                {files} files, {len(problems)} problems")
    for p in problems:
        print(f"  BAD {p}")
    ok = (not problems and missing == 0 and dups == 0 and order_ok and acked == sent
          and sum(seen.values()) + rejected == sent)
    print("result                " + ("OK" if ok else "FAILED"))
    print(f"inspect it:           recorder read {root} --type a3cp_message | head")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m recorder.demo``: one producer process of the demo."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--config")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=30.0)
    a = ap.parse_args(argv)
    print(json.dumps(produce(a.index, a.data_root, a.config, a.seconds, a.fps)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
