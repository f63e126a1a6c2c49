"""Replay timing: schedule error (actual minus intended emission time) at 1k and 5k records/s.

Each case runs in a fresh subprocess (``--one``). It writes a recording of
~1 KB ``a3cp_message`` records received exactly 1/rate apart (the writer's
own path with the receive clock given; JSONL segments of 2000 records, so
the player crosses files while it plays), starts a subscriber process (SUB
over ipc), and plays the recording at speed 1 to an XPUB socket the way
``recorder replay --to`` does (``recorder.reading.replay.Replay`` with the
``SystemClock``, the CLI's ZeroMQ sink, a subscription wait first).

Measured per record: the **schedule error** when the send returned
(``time.monotonic_ns()`` minus the record's intended time), and when the
replay released it (``Replay.stats``). The subscriber checks that every
record arrives once and in order, and measures arrival lateness relative
to the first record (delivery jitter included). Per case: the machine's
load average before and after, the CPU the player, the subscriber and
other processes used (psutil; steal time from the hypervisor).

Results go to ``benchmarks/results/replay-<time>.json``, a plot beside it
(CDF and tail of the schedule error, the error over time), and a Markdown
table to stdout. Exit status 1 when a target is missed (p99 <= 1 ms at
1k records/s, <= 2 ms at 5k) or a case fails.

    python -m benchmarks replay                 # 1k and 5k records/s, 10 s each, ~40 s
    python -m benchmarks replay --quick         # 3 s each
    python -m benchmarks replay --rates 1000 5000 20000 --spin-us 0
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

from ._common import PACKAGE_DIR, default_data_parent, machine_info, markdown_table, progress, run_case, write_results

CASE = "replay"
TARGET_P99_MS = {1000.0: 1.0, 5000.0: 2.0}  # issue 16, "Timing that holds"
POOL = 1024  # distinct records, cycled
CONFIG = """
[recorder]
min_free_bytes = 0
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "seg/{schema_type}_{segment:04d}.jsonl"
durability = "os"
rotate_records = 2000
"""


def add_parser(subparsers: Any) -> None:
    """Add the ``replay`` subcommand."""
    p = subparsers.add_parser(CASE, help="replay schedule error (actual minus intended send time) at 1k and 5k/s",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", nargs="+", type=float, default=[1000.0, 5000.0], help="records/s (default 1000 5000)")
    p.add_argument("--seconds", type=float, help="recorded (and replayed) seconds per case (default 10; --quick: 3)")
    p.add_argument("--spin-us", type=float, default=50.0, help="SystemClock spin before each deadline (default 50)")
    p.add_argument("--realtime", action="store_true",
                   help="also play each rate under SCHED_FIFO (`recorder replay --realtime`; needs CAP_SYS_NICE)")
    p.add_argument("--quick", action="store_true", help="3 s per case")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/replay-<time>.json)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode: one case
    p.add_argument("--subscriber", help=argparse.SUPPRESS)  # grandchild mode: SUB on this endpoint
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point: the subscriber, one case in this process (``--one``), or every case in subprocesses."""
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.subscriber:
        return _subscriber(args.subscriber, args.count)
    if args.one:
        return _one(args)
    return _all(args)


# -- parent --------------------------------------------------------------------------
def _all(args: argparse.Namespace) -> int:
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for rate, rt in [(r, rt) for r in args.rates for rt in ([False, True] if args.realtime else [False])]:
        progress(f"replay: {rate:,.0f} records/s for {args.seconds:g} s{' (SCHED_FIFO)' if rt else ''} ...")
        argv = ["--rates", repr(rate), "--seconds", repr(args.seconds), "--spin-us", repr(args.spin_us),
                "--dir", str(parent)] + (["--realtime"] if rt else [])
        try:
            r = run_case(CASE, argv, timeout=args.seconds * 6 + 180)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            progress(f"    FAILED: {e}")
            failures.append(f"{rate:g}/s{' realtime' if rt else ''}")
            continue
        results.append(r)
        e = r["send_error_ms"]
        progress(f"    schedule error p50 {e['p50']:.3f} ms, p99 {e['p99']:.3f} ms, max {e['max']:.3f} ms; "
                 f"delivered {r['delivered']}/{r['records']} in order: {r['in_order']}; load average "
                 f"{r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}; other processes "
                 f"{r['other_cpu_cores']:.2f} CPUs, steal {r['steal_cores']:.2f}")
    rows = [_row(r) for r in results]
    payload = {"benchmark": CASE, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks", *sys.argv[1:]]),
               "settings": {"seconds": args.seconds, "spin_us": args.spin_us, "rates": args.rates},
               "targets_p99_ms": {str(k): v for k, v in TARGET_P99_MS.items()},
               "machine": machine_info(parent), "summary": rows, "failed": failures, "results": results}
    path = write_results(CASE, payload, args.out)
    plot = None if args.no_plot else _plot(results, path.with_suffix(".png"))
    m = payload["machine"]
    print(f"replay schedule error: {m['cpu_count']} CPU ({m['cpu_model']}), Python {m['python']}, recorder "
          f"{m['libraries']['recorder']} ({m['git']}), pyzmq {m['libraries']['pyzmq']}, {args.seconds:g} s per "
          f"case, spin {args.spin_us:g} µs, to XPUB over ipc with one subscriber process")
    print()
    print(markdown_table(rows, [
        ("rate", "records/s"), ("scheduling", "scheduling"), ("records", "records"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
        ("p99_ms", "p99 ms"), ("p999_ms", "p99.9 ms"), ("max_ms", "max ms"), ("late_1ms", "> 1 ms"),
        ("release_p99_ms", "release p99 ms"), ("delivered", "delivered"), ("arrival_p99_ms", "arrival p99 ms"),
        ("player_cpu_pct", "player CPU %"), ("load_before", "load before"), ("load_after", "load after"),
        ("other_cpu_cores", "other CPUs"), ("steal_cores", "steal CPUs"), ("target", "target p99")]))
    print()
    print("schedule error: send returned minus intended time; release: when replay handed the record out; "
          "arrival: at the subscriber, relative to the first record (delivery jitter included)")
    if plot is not None:
        print(f"plot: {plot}")
    print(f"results: {path}")
    status = 0
    for r in rows:
        if r["target"].startswith("missed"):
            print(f"TARGET MISSED: {r['rate']:g} records/s ({r['scheduling']}): p99 {r['p99_ms']:.3f} ms ({r['target']})",
                  file=sys.stderr)
            status = 1
        if r["delivered"] != r["records"] or not r["in_order"]:
            print(f"DELIVERY: {r['rate']:g} records/s: {r['delivered']} of {r['records']} (in order: "
                  f"{r['in_order']})", file=sys.stderr)
            status = 1
    if failures:
        print(f"FAILED cases: {', '.join(failures)}", file=sys.stderr)
        status = 1
    return status


def _row(r: dict[str, Any]) -> dict[str, Any]:
    e = r["send_error_ms"]
    target = TARGET_P99_MS.get(r["rate"])
    verdict = "-" if target is None else f"{'met' if e['p99'] <= target else 'missed'} (<= {target:g} ms)"
    return {"rate": r["rate"], "scheduling": r["scheduling"], "records": r["records"], "p50_ms": e["p50"], "p90_ms": e["p90"], "p99_ms": e["p99"],
            "p999_ms": e["p99.9"], "max_ms": e["max"], "late_1ms": r["late_1ms"],
            "release_p99_ms": r["release_error_ms"]["p99"], "delivered": r["delivered"], "in_order": r["in_order"],
            "arrival_p99_ms": r["arrival_ms"]["p99"], "player_cpu_pct": r["player_cpu_pct"],
            "load_before": round(r["loadavg_before"][0], 2), "load_after": round(r["loadavg_after"][0], 2),
            "other_cpu_cores": r["other_cpu_cores"], "steal_cores": r["steal_cores"], "target": verdict}


def _plot(results: list[dict[str, Any]], path: Path) -> Path | None:
    """Tail (1 - CDF) of the schedule error per case, and the error of each record over the run."""
    try:
        import matplotlib
    except ImportError:
        progress("matplotlib is not installed: no plot drawn (pip install matplotlib, or the 'bench' extra)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        return None
    fig, (ax_tail, ax_time) = plt.subplots(1, 2, figsize=(14, 5.2))
    for r in results:
        xs, ys = r["tail"]
        label = (f"{r['rate']:,.0f}/s {r['scheduling']} (n={r['records']:,}, "
                 f"load {r['loadavg_before'][0]:.1f}, others {r['other_cpu_cores']:.1f} CPUs)")
        ax_tail.step(xs, ys, where="post", label=label)
        ts, es = r["series"]
        ax_time.plot(ts, es, ".", markersize=2, label=label)
    for k, (rate, target) in enumerate(TARGET_P99_MS.items()):
        ax_tail.axvline(target, linestyle=":", color="grey", linewidth=1)
        ax_tail.text(target, 0.5 ** (3 * k), f" p99 target at {rate / 1000:g}k/s", fontsize=7, va="top")
    ax_tail.axhline(0.01, linestyle="--", color="red", linewidth=0.8, label="1% of records (p99)")
    ax_tail.set_xscale("log")
    ax_tail.set_yscale("log")
    ax_tail.set_xlabel("schedule error: send returned - intended (ms)")
    ax_tail.set_ylabel("fraction of records later than x")
    ax_tail.set_title("schedule error: tail")
    ax_tail.grid(True, which="both", alpha=0.3)
    ax_tail.legend(fontsize=8)
    ax_time.set_yscale("log")
    ax_time.set_xlabel("replay time (s)")
    ax_time.set_ylabel("schedule error (ms)")
    ax_time.set_title("schedule error over the run (every record up to 20k shown per case)")
    ax_time.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8, markerscale=4)
    m = results[0]["machine"]
    fig.suptitle(f"recorder replay to XPUB (ipc, 1 subscriber): {m['cpu_count']} CPU, Python {m['python']}, "
                 f"recorder {m['git']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- child: one case --------------------------------------------------------------------
def _percentiles(sorted_ns: list[int]) -> dict[str, float]:
    def q(p: float) -> float:
        return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p / 100))] / 1e6

    return {"p50": q(50), "p90": q(90), "p99": q(99), "p99.9": q(99.9), "max": sorted_ns[-1] / 1e6}


def _tail(sorted_ns: list[int]) -> tuple[list[float], list[float]]:
    """Points of 1 - CDF (ms, fraction), log-spaced in rank so the tail keeps its detail."""
    n = len(sorted_ns)
    ranks = sorted({min(n - 1, int(n - n / 10 ** (k / 40))) for k in range(0, 40 * 6)} | {n - 1})
    return [max(sorted_ns[i], 1) / 1e6 for i in ranks], [max((n - 1 - i) / n, 0.5 / n) for i in ranks]


def _write_recording(root: Path, rate: float, n: int) -> None:
    from recorder import Store
    from recorder.schema.config import parse_config
    from recorder.testing import sample_message
    from recorder.protocol import Record
    from recorder.schema.validation import encode_record
    from recorder.storage.writer import Entry

    t0 = 1_780_000_000 * 10**9
    step = round(1e9 / rate)
    with Store(parse_config(CONFIG, "<replay benchmark>"), data_root=root) as store:
        accs = [store.check(Record("inproc", 0, "a3cp_message", encode_record(sample_message("bench", "s1", i))))
                for i in range(POOL)]
        w = store.writers["a3cp_message"]
        for k in range(0, n, 500):
            w.write([Entry(accs[i % POOL], store.seq.take(), t0 + i * step, "bench", i + 1)
                     for i in range(k, min(n, k + 500))])
        store.sealer.wait_idle(120)


def _one(args: argparse.Namespace) -> int:
    import psutil

    from recorder._cli_replay import _realtime, _ZmqSink
    from recorder.reading.replay import Replay, SystemClock

    rate = args.rates[0]
    n = int(rate * args.seconds)
    parent = Path(args.dir) if args.dir else default_data_parent()
    root = Path(tempfile.mkdtemp(prefix="replay-", dir=parent))
    run_dir = tempfile.mkdtemp(prefix="replay-ipc-")
    endpoint = f"ipc://{run_dir}/pub"
    sub = None
    try:
        _write_recording(root, rate, n)
        sub = subprocess.Popen([sys.executable, "-m", "benchmarks", CASE, "--subscriber", endpoint, "--count", str(n)],
                               stdout=subprocess.PIPE, text=True, cwd=PACKAGE_DIR.parent)
        sink = _ZmqSink(endpoint, "pub", False, 100_000)
        sink.wait(1, 60)
        if args.realtime and (why := _realtime()) is not None:
            raise SystemExit(f"--realtime: {why}")
        me, sub_ps = psutil.Process(), psutil.Process(sub.pid)
        load0, sys0, cpu0, sub_cpu0 = os.getloadavg(), psutil.cpu_times(), me.cpu_times(), sub_ps.cpu_times()
        rp = Replay(root, speed=1.0, clock=SystemClock(int(args.spin_us * 1000)))
        errors: list[int] = []
        clock = time.monotonic_ns
        w0 = time.monotonic()
        for topic, data in rp.frames():
            sink.send(topic, data)
            errors.append(clock() - rp.intended_ns)
        wall = time.monotonic() - w0
        load1, sys1, cpu1, sub_cpu1 = os.getloadavg(), psutil.cpu_times(), me.cpu_times(), sub_ps.cpu_times()
        sink.close(10_000)
        out, _ = sub.communicate(timeout=120)
        got = json.loads(out.strip().splitlines()[-1])
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
            sub.wait()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    busy = sum(sys1) - sum(sys0) - (sys1.idle - sys0.idle) - (getattr(sys1, "iowait", 0) - getattr(sys0, "iowait", 0))
    steal = getattr(sys1, "steal", 0.0) - getattr(sys0, "steal", 0.0)
    player = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    subscriber = (sub_cpu1.user + sub_cpu1.system) - (sub_cpu0.user + sub_cpu0.system)
    ordered = sorted(errors)
    every = max(1, len(errors) // 20_000)
    step_s = 1 / rate
    result = {
        "benchmark": CASE, "rate": rate, "scheduling": "SCHED_FIFO" if args.realtime else "normal", "records": n, "seconds": args.seconds, "spin_us": args.spin_us,
        "wall_s": round(wall, 3),
        "send_error_ms": _percentiles(ordered),
        "release_error_ms": rp.stats.percentiles(),
        "late_1ms": sum(1 for e in errors if e > 1_000_000),
        "delivered": got["count"], "in_order": got["in_order"], "duplicates": got["duplicates"],
        "arrival_ms": got["arrival_ms"],
        "player_cpu_pct": round(100 * player / wall, 1),
        "subscriber_cpu_pct": round(100 * subscriber / wall, 1),
        "other_cpu_cores": round(max(0.0, busy - steal - player - subscriber) / wall, 2),
        "steal_cores": round(steal / wall, 2),
        "loadavg_before": load0, "loadavg_after": load1,
        "tail": _tail(ordered),
        "series": [[round(i * step_s, 4) for i in range(0, len(errors), every)],
                   [max(errors[i], 1000) / 1e6 for i in range(0, len(errors), every)]],
        "machine": machine_info(parent),
    }
    print(json.dumps(result))
    return 0


# -- grandchild: the subscriber ------------------------------------------------------------
def _subscriber(endpoint: str, count: int) -> int:
    """Receive ``count`` records; report count, order, duplicates and arrival lateness vs the first one."""
    import msgspec
    import zmq

    from recorder.reading.replay import parse_time

    class _Env(msgspec.Struct):
        seq: int
        received: str

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    seqs: list[int] = []
    late: list[int] = []
    first: tuple[int, int] | None = None
    deadline = time.monotonic() + 60 + count / 500
    try:
        while len(seqs) < count and time.monotonic() < deadline:
            if not s.poll(200):
                continue
            _topic, body = s.recv_multipart()
            now = time.monotonic_ns()
            e = msgspec.json.decode(body, type=_Env)
            t = parse_time(e.received, "received") or 0
            if first is None:
                first = (now, t)
            late.append(now - first[0] - (t - first[1]))
            seqs.append(e.seq)
    finally:
        s.close(linger=0)
        ctx.term()
    late.sort()
    print(json.dumps({"count": len(seqs), "in_order": seqs == sorted(seqs),
                      "duplicates": len(seqs) - len(set(seqs)),
                      "arrival_ms": _percentiles(late) if late else {}}))
    return 0
