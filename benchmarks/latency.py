"""Latency budget: durable-ack latency, ``record()`` call time and throughput, end to end.

Each case starts a supervised recorder (``python -m recorder run``) on a
fresh data root, then N producer processes (``python -m benchmarks.latency
--producer ...``), each with one ``recorder.Client`` sending ~1 KB
``a3cp_message`` records (``recorder.testing.sample_message``):

- ``capture``: a 30 fps capture loop per producer (``--fps``);
- ``paced``: ``--rate`` records/s in total across the producers (default
  5,000, i.e. 1,250/s each), paced on a deadline schedule;
- ``unpaced``: as fast as ``record()`` allows, with a bounded client buffer
  (``--max-pending``): the maximum durable throughput. Its ack latency is
  queueing behind that buffer (about max-pending / throughput), and its
  ``record()`` maximum is backpressure (blocking on a full buffer).

Paced producers are interleaved (producer i starts i/N of a period late);
``--phase aligned`` makes them tick together (bursts of N records).

Every producer warms up (``--warmup`` seconds of the same traffic, then
``flush()``), waits for a common start signal, sends for ``--seconds``, then
flushes. Measured per record: the ``record()`` call (perf_counter_ns around
it) and the durable-ack latency (``Client.latencies_ns``: from ``record()``
to the acknowledgement that the record is fdatasync'd). Per case: throughput
(acked records / time from start to the last ack), recorder CPU and RSS
(psutil on the recorder pid of the READY line), batch sizes from the
recorder's stats.

Results go to ``benchmarks/results/latency-<time>.json``, a plot of the
latency distributions beside it (``.png``, needs matplotlib), and a Markdown
table to stdout. The exit status is 1 when the p99 durable-ack latency of a
paced case (``capture``, ``paced``) exceeds ``--budget-ms`` (50 ms, NF1), or
a case fails. Before the cases, a 1 KB append + fdatasync probe of the data
filesystem, and per case the CPU other processes took, are recorded: on a
shared machine both move the tails a lot (``--repeat`` keeps the median run).

    python -m benchmarks latency                # 3 cases, 10 s each, ~45 s
    python -m benchmarks latency --quick        # CI: 2 s each, < 30 s
    python -m benchmarks latency --cases paced --rate 5000 20000 --sessions shared
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._common import (
    Child,
    cpu_s,
    default_data_parent,
    fsync_probe,
    go,
    histogram,
    json_lines,
    load_samples,
    machine_busy_s,
    machine_info,
    markdown_table,
    percentiles,
    progress,
    recorder_stats,
    run_case,
    start_producers,
    start_server,
    stop_all,
    write_results,
)
from ._latency_producer import SCHEMA_TYPE, producer
from ._latency_report import PACED, TARGETS, draw_plot, median_runs, print_targets, row

CASE = "latency"
KINDS = ("capture", "paced", "unpaced")
BUDGET_MS = 50.0  # NF1


def add_parser(subparsers: Any) -> None:
    """Add the ``latency`` subcommand."""
    p = subparsers.add_parser(CASE, help="durable-ack latency, record() cost and throughput (4 producers)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=KINDS, default=list(KINDS), help="which cases (default: all)")
    p.add_argument("--rate", nargs="+", type=float, default=[5000.0],
                   help="total records/s of the paced case(s), across all producers (default 5000)")
    p.add_argument("--fps", type=float, default=30.0, help="records/s per producer in the capture case")
    p.add_argument("--producers", type=int, default=4, help="producer processes (default 4)")
    p.add_argument("--seconds", type=float, help="measured seconds per case (default 10; --quick: 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 0.5; --quick: 0.3)")
    p.add_argument("--quick", action="store_true", help="short run for CI (< 30 s in all)")
    p.add_argument("--sessions", choices=("per-producer", "shared"), default="per-producer",
                   help="per-producer: each producer its own user/session (own file); shared: one file")
    p.add_argument("--phase", choices=("staggered", "aligned"), default="staggered",
                   help="paced producers evenly interleaved (staggered) or ticking at the same instants (aligned)")
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the table shows the run with the median p99")
    p.add_argument("--payload", choices=("dict", "model"), default="dict",
                   help="record() gets dicts, or A3CPMessage pydantic models")
    p.add_argument("--max-pending", type=int, default=10_000,
                   help="client buffer bound in the unpaced case (paced cases use the Client default)")
    p.add_argument("--budget-ms", type=float, default=BUDGET_MS, help="p99 durable-ack budget of paced cases")
    p.add_argument("--config", help="registry TOML for the recorder and clients (default: the shipped one)")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data roots")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/latency-<time>.json)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode: one case
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point: one case in this process (``--one``), or every case in subprocesses."""
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 0.5
    if args.producers < 1:
        raise SystemExit("--producers must be >= 1")
    if args.one:
        return _one(args)
    return _all(args)


# -- parent: every case in a fresh interpreter ---------------------------------
def _case_list(args: argparse.Namespace) -> list[tuple[str, float]]:
    """(kind, total target rate; 0 for unpaced) per case, in run order."""
    out: list[tuple[str, float]] = []
    for kind in args.cases:
        if kind == "capture":
            out.append((kind, args.fps * args.producers))
        elif kind == "paced":
            out.extend((kind, r) for r in args.rate)
        else:
            out.append((kind, 0.0))
    return out


def _label(kind: str, rate: float) -> str:
    if kind == "capture":
        return "capture"
    if kind == "paced":
        return f"paced {rate / 1000:g}k/s" if rate >= 1000 else f"paced {rate:g}/s"
    return "unpaced"


def _all(args: argparse.Namespace) -> int:
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    cases = _case_list(args)
    t_all = time.monotonic()
    progress(f"latency: {len(cases)} cases, {args.producers} producers, {args.seconds:g} s each "
             f"(+{args.warmup:g} s warm-up), data under {parent}")
    disk = fsync_probe(parent, 0.5 if args.quick else 1.5)
    progress(f"disk probe ({parent}): 1 KB append + fdatasync p50 {disk['p50_us']:.0f} us, "
             f"p99 {disk['p99_us']:.0f} us, p99.9 {disk['p99.9_us']:.0f} us, max {disk['max_us']:.0f} us")
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    runs = [(rep, kind, rate) for rep in range(args.repeat) for kind, rate in cases]
    for i, (rep, kind, rate) in enumerate(runs, 1):
        argv = ["--cases", kind, "--rate", repr(rate), "--fps", repr(args.fps),
                "--producers", str(args.producers), "--seconds", repr(args.seconds),
                "--warmup", repr(args.warmup), "--sessions", args.sessions, "--payload", args.payload,
                "--phase", args.phase, "--max-pending", str(args.max_pending), "--dir", str(parent)]
        if args.config:
            argv += ["--config", args.config]
        if args.keep:
            argv.append("--keep")
        label = _label(kind, rate)
        progress(f"[{i}/{len(runs)}] {label}{f' (run {rep + 1})' if args.repeat > 1 else ''} ...")
        try:
            r = run_case(CASE, argv, timeout=args.seconds * 4 + 180)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            progress(f"    FAILED: {e}")
            failures.append(label)
            continue
        r["label"] = label
        r["run"] = rep + 1
        results.append(r)
        a = r["ack_ms"]
        progress(f"    {r['throughput_per_s']:,.0f} acked records/s; durable ack p50 {a['p50']:.3f} ms, "
                 f"p99 {a['p99']:.3f} ms, p99.9 {a['p99.9']:.3f} ms, max {a['max']:.3f} ms; "
                 f"record() p50 {r['call_us']['p50']:.1f} us; batch mean {r['batch_mean']}; "
                 f"other processes used {r['other_cpu_cores']:.2f} of {r['machine']['cpu_count']} CPUs")
        if r["recorder_exit"] != 0:
            progress(f"    note: the supervisor exited with {r['recorder_exit']} on SIGTERM (not a graceful stop)")
    chosen = median_runs(results)
    rows = [row(r, args.budget_ms) for r in chosen]
    over = [r for r in rows if r["kind"] in PACED and r["ack_p99_ms"] > args.budget_ms]
    payload = {
        "benchmark": CASE,
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "budget_ms": args.budget_ms,
        "targets": TARGETS,
        "settings": {"producers": args.producers, "seconds": args.seconds, "warmup": args.warmup,
                     "sessions": args.sessions, "phase": args.phase, "payload": args.payload,
                     "repeat": args.repeat, "max_pending_unpaced": args.max_pending,
                     "config": args.config or "default", "fsync": results[0]["durability"] if results else None},
        "machine": machine_info(parent),
        "fsync_probe": disk,
        "summary": rows,
        "failed": failures,
        "results": results,
        "elapsed_s": round(time.monotonic() - t_all, 1),
    }
    path = write_results(CASE, payload, args.out)
    progress(f"results written to {path}")
    plot = None if args.no_plot else draw_plot(chosen, path.with_suffix(".png"), args.budget_ms)
    if plot is not None:
        progress(f"plot written to {plot}")
    m = payload["machine"]
    print(f"latency budget: {m['cpu_count']} CPU ({m['cpu_model']}), Python {m['python']}, "
          f"{m['data_fs']['fstype']} on {m['data_fs']['device']}, recorder {m['libraries']['recorder']} "
          f"({m['git']}), pyzmq {m['libraries']['pyzmq']}, durability {payload['settings']['fsync']}, "
          f"{args.producers} producers ({args.phase}), {args.sessions} sessions, {args.payload} payloads, "
          f"{args.seconds:g} s per case" + (f", median of {args.repeat} runs by p99" if args.repeat > 1 else ""))
    print()
    print(markdown_table(rows, [
        ("label", "case"), ("records", "records"), ("target_per_s", "target/s"),
        ("throughput_per_s", "acked/s"), ("call_p50_us", "record() p50 µs"), ("call_p99_us", "record() p99 µs"),
        ("call_max_us", "record() max µs"), ("ack_p50_ms", "ack p50 ms"), ("ack_p99_ms", "ack p99 ms"),
        ("ack_p999_ms", "ack p99.9 ms"), ("ack_max_ms", "ack max ms"), ("batch_mean", "batch mean"),
        ("recorder_cpu_pct", "recorder CPU %"), ("recorder_rss_mib", "RSS MiB"),
        ("other_cpu_cores", "other load (CPUs)"), ("budget", "budget"),
    ]))
    print()
    print(f"1 KB append + fdatasync on the data filesystem just before: p50 {disk['p50_us']:.0f} µs, "
          f"p99 {disk['p99_us']:.0f} µs, p99.9 {disk['p99.9_us']:.0f} µs, max {disk['max_us']:.0f} µs")
    busy = [f"{r['label']} {r['other_cpu_cores']:.2f}" for r in chosen if r["other_cpu_cores"] > 0.2]
    if busy:
        print(f"machine busy: other processes used CPUs during the cases ({', '.join(busy)} of "
              f"{m['cpu_count']}): latencies are pessimistic")
    print_targets(rows)
    if plot is not None:
        print(f"plot: {plot}")
    print(f"results: {path}")
    status = 0
    for r in over:
        print(f"BUDGET EXCEEDED: {r['label']}: p99 durable-ack latency {r['ack_p99_ms']:.2f} ms "
              f"> {args.budget_ms:g} ms", file=sys.stderr)
        status = 1
    if failures:
        print(f"FAILED cases: {', '.join(failures)}", file=sys.stderr)
        status = 1
    return status


# -- child: one case -------------------------------------------------------------
def _one(args: argparse.Namespace) -> int:
    import psutil

    from recorder.schema.config import load_config

    kind, rate = args.cases[0], args.rate[0]
    n = args.producers
    per_rate = args.fps if kind == "capture" else (rate / n if kind == "paced" else 0.0)
    target = per_rate * n
    durability = load_config(args.config).types[SCHEMA_TYPE].durability
    parent = Path(args.dir) if args.dir else default_data_parent()
    root = os.path.realpath(tempfile.mkdtemp(prefix=f"latency-{kind}-", dir=parent))
    sup: Child | None = None
    producers: list[Child] = []
    try:
        cmd = ["-m", "recorder", "run", "--data-root", root]
        if args.config:
            cmd += ["--config", args.config]
        sup, ready = start_server(cmd, "the recorder")
        rec = psutil.Process(ready["pid"])

        pcmds = []
        for i in range(n):
            pcmd = ["-m", "benchmarks.latency", "--producer", "--index", str(i),
                    "--data-root", root, "--rate", repr(per_rate), "--seconds", repr(args.seconds),
                    "--warmup", repr(args.warmup), "--sessions", args.sessions, "--payload", args.payload,
                    "--samples", os.path.join(root, f"_samples-{i}"),
                    "--phase", repr(i / n if args.phase == "staggered" else 0.0)]
            if kind == "unpaced":
                pcmd += ["--max-pending", str(args.max_pending)]
            if args.config:
                pcmd += ["--config", args.config]
            pcmds.append(pcmd)
        producers = start_producers(pcmds, 60 + 4 * args.warmup + 30)

        # Everyone is connected and warm: start together.
        stats0 = recorder_stats(ready["control"])
        cpu0 = rec.cpu_times()
        sup_proc = psutil.Process(sup.proc.pid)
        sup_cpu0, me_cpu0 = sup_proc.cpu_times(), psutil.Process().cpu_times()
        sys0 = psutil.cpu_times()
        psutil.cpu_percent(None)
        sampler = _RssSampler(rec)
        sampler.start()
        t_go = time.time()
        go(producers)
        outs = json_lines(producers, args.seconds * 3 + 150)
        cpu1 = rec.cpu_times()
        sys_cpu = psutil.cpu_percent(None)
        sys1 = psutil.cpu_times()
        sup_cpu1, me_cpu1 = sup_proc.cpu_times(), psutil.Process().cpu_times()
        t_end = time.time()
        sampler.stop()
        stats1 = recorder_stats(ready["control"])
        for c in producers:
            c.proc.wait(timeout=30)

        calls: list[int] = []
        acks: list[int] = []
        for i in range(n):
            calls.extend(load_samples(os.path.join(root, f"_samples-{i}.call")))
            acks.extend(load_samples(os.path.join(root, f"_samples-{i}.ack")))
        calls.sort()
        acks.sort()
        records = sum(o["records"] for o in outs)
        start = min(o["t_start"] for o in outs)
        window = max(o["t_done"] for o in outs) - start
        send_window = max(o["t_sent"] for o in outs) - start
        rec_cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        wall = t_end - t_go
        # CPU the rest of the machine took meanwhile (other users, tests): noise, reported.
        busy = machine_busy_s(sys1) - machine_busy_s(sys0)
        ours = (rec_cpu_s + sum(o["cpu_s"] for o in outs) + cpu_s(sup_cpu1) - cpu_s(sup_cpu0)
                + cpu_s(me_cpu1) - cpu_s(me_cpu0))
        t0, t1 = stats0["types"][SCHEMA_TYPE], stats1["types"][SCHEMA_TYPE]
        batches = t1["batches"] - t0["batches"]
        result = {
            "benchmark": CASE,
            "kind": kind,
            "producers": n,
            "target_per_s": target,
            "rate_per_producer": per_rate,
            "durability": durability,
            "fsync": durability == "fsync",
            "sessions": args.sessions,
            "phase": args.phase,
            "payload": args.payload,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "records": records,
            "ack_samples": len(acks),
            "send_rate_per_s": round(records / send_window, 1),
            "throughput_per_s": round(records / window, 1),
            "window_s": round(window, 4),
            "call_us": percentiles(calls, 1e3),
            "ack_ms": percentiles(acks, 1e6),
            "call_hist": histogram(calls),
            "ack_hist": histogram(acks),
            "batches": batches,
            "batch_mean": round((t1["records"] - t0["records"]) / batches, 2) if batches else None,
            "batch_max_recent": t1["batch_max"],
            "recorder": {
                "pid": ready["pid"],
                "cpu_s": round(rec_cpu_s, 3),
                "cpu_user_s": round(cpu1.user - cpu0.user, 3),
                "cpu_system_s": round(cpu1.system - cpu0.system, 3),
                "cpu_us_per_record": round(rec_cpu_s / records * 1e6, 1) if records else None,
                "cpu_pct": round(100 * rec_cpu_s / wall, 1),
                "rss_peak_mib": round(sampler.peak / 2**20, 1),
                "rss_end_mib": round(sampler.last / 2**20, 1),
                "threads": sampler.threads,
                "receive_to_durable_ms": t1["ack_latency_ms"],  # the recorder's own view (last 16k records)
                "counters": {k: stats1[k] - stats0.get(k, 0) for k in
                             ("received", "duplicates", "gaps", "unknown_producer", "acks_sent",
                              "acks_undeliverable") if k in stats1},
            },
            "system_cpu_pct": sys_cpu,
            "other_cpu_cores": round(max(0.0, busy - ours) / wall, 2),
            "loadavg": os.getloadavg(),
            "producer": {
                "cpu_pct": [o["cpu_pct"] for o in outs],
                "lag_max_ms": max(o["lag_max_ms"] for o in outs),
                "late": sum(o["late"] for o in outs),
                "resent": sum(o["resent"] for o in outs),
                "blocked": sum(o["blocked"] for o in outs),
            },
            "data_root": root,
            "machine": machine_info(parent),
        }
        if len(acks) != records:
            raise RuntimeError(f"{len(acks)} ack latencies for {records} records")
    finally:
        stop_all(producers, [sup])
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    assert sup is not None
    result["recorder_exit"] = sup.proc.returncode
    print(json.dumps(result))
    return 0


class _RssSampler(threading.Thread):
    """Samples the recorder's RSS and thread count every 100 ms."""

    def __init__(self, proc: Any) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.peak = self.last = self.threads = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                with self.proc.oneshot():
                    self.last = self.proc.memory_info().rss
                    self.threads = self.proc.num_threads()
            except Exception:  # the process is gone; the case reports that elsewhere
                return
            self.peak = max(self.peak, self.last)
            self._stop_event.wait(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


if __name__ == "__main__":
    if "--producer" in sys.argv[1:]:
        sys.exit(producer())
    sys.exit("usage: python -m benchmarks latency ... (this module is the latency case; see --help there)")
