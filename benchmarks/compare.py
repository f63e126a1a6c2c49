"""Peers in one run: the recorder beside simple writers, under the same load.

``python -m benchmarks compare`` runs each variant below with 4 producer
processes (``--producers``) sending the same ~1 KB ``a3cp_message`` dicts
(``recorder.testing.sample_message``), paced at 1k, 5k and 20k records/s in
total and unpaced (``--rates``), one fresh interpreter per (rate, variant),
all variants of a rate back to back so that the ratios come from one run on
one machine state:

- ``recorder``: ``recorder.Client`` -> a supervised ``python -m recorder run``
  (the shipped config: validation, hash chain, group commit, fdatasync before
  the acknowledgement). All producers share one user/session, so all records
  go to one file like the peers' (``--sessions per-producer``: a file each).
- ``reference``: the same duties in a minimal single-threaded server written
  in the benchmark (``benchmarks/_reference.py``): producers PUSH batched
  frames; byte checks, typed decode, envelope, sha256 chain, one write +
  fdatasync per batch, one ack per producer per batch. What the recorder's
  figures are held against.
- ``flock``: what the original A3CP ``schema_recorder`` does per record:
  open with O_APPEND, ``flock(LOCK_EX)``, one ``write`` of the line, close;
  one JSONL file shared by all producers; no fsync.
- ``flock-fsync``: the same with ``fsync`` before the close.
- ``logging``: stdlib ``logging`` with a ``QueueHandler`` on a
  ``queue.SimpleQueue`` and a ``QueueListener`` thread in each producer
  process writing through a ``FileHandler`` to that producer's own file (the
  usual way to keep file I/O off the calling thread; a multiprocessing queue
  to one listener process would add a pickling hop and one more process).
  ``FileHandler`` flushes to the page cache after each record; no fsync.
- ``sqlite``: one shared SQLite database in WAL mode, ``synchronous=FULL``,
  an autocommit INSERT per record (one WAL fsync per record); concurrent
  producers wait on SQLite's busy handler (``timeout=60``).
- ``sqlite-100``: the same database, records buffered in the producer and
  inserted 100 at a time in one transaction (``--sqlite-batch``).

Every peer validates each record with the recorder's own pydantic model
(``A3CPMessage.model_validate``) and writes ``{"recorded_at": ..., "event":
<model_dump_json()>}`` lines (the original's envelope, built the cheaper
way), so peers do the validation work the recorder does in its own process.

Per record: the ``record()`` call (perf_counter_ns around it) and the time
until the record is durable: for the recorder, from ``record()`` to its
durable acknowledgement (``Client.latencies_ns``); for the peers, from the
``record()`` call to the return of the write+fsync or the commit holding it.
The ``flock`` and ``logging`` peers never make a record durable: for them
the time until the write returned (into the page cache) is reported instead,
marked as not durable (italics in the table). Per case: records/s (all
records / time from the start to the last record durable or written),
writer CPU (the recorder process via psutil; for the peers the producers'
own CPU, since they write themselves), CPU per record of all processes
(producers + recorder + its supervisor), peak RSS (VmHWM), and the CPU other
processes of the machine took meanwhile (noise). A paced producer that falls
behind its schedule stops on time: the shortfall shows as records/s below
the offered rate (and in ``late``/``lag_max_ms`` in the JSON); latencies are
measured from the call, not from the missed schedule.

Every case runs with the config's ``a3cp_message`` at ``durability = "fsync"`` and
``hash = "sha256"`` (the shipped values; another config is refused) and the
results record its digest. ``--profile`` adds the recorder's CPU per record by
thread and stage, from its stats' ``profile`` (process CPU only when a
recorder does not report one). Below the table, the limits: the recorder's
records/s, durable p99 and CPU per record against the reference's and
SQLite-100's, with ``record()`` calls that waited for room counted apart.

Results: ``benchmarks/results/compare-<time>.json``, the Markdown table
printed and written beside it (``.md``), and two PNG plots (``-latency.png``:
latency distributions at 5k/s; ``-rates.png``: throughput, p99 latency and
``record()`` p99 against the offered rate). A 1 KB append + fdatasync probe
of the data filesystem runs before and after the cases.

    python -m benchmarks compare                 # 7 variants x 4 rates, 10 s each, ~6 min
    python -m benchmarks compare --quick         # 5k/s and unpaced, 1 s each, < 1 min
    python -m benchmarks compare --variants recorder reference sqlite-100 --rates 5000 --seconds 5
    python -m benchmarks compare --quick --variants recorder reference --profile
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _reference
from ._common import (
    PACKAGE_DIR,
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
    percentiles,
    progress,
    recorder_stats,
    run_case,
    start_producers,
    start_server,
    stop_all,
    stop_server,
    vm_hwm,
    wait_line,
    write_results,
)
from ._compare_report import markdown_report, median_runs, plot_latency, plot_rates, rate_label, summarize
from ._peers import JSONL_FILE, SCHEMA_TYPE, SERVED, SQLITE_FILE, VARIANTS

CASE = "compare"
DEFAULT_RATES = (1000.0, 5000.0, 20000.0, 0.0)  # 0: unpaced
QUICK_RATES = (5000.0, 0.0)
SHIPPED = {"durability": "fsync", "hash": "sha256"}  # every figure is measured with these


def _rate(text: str) -> float:
    if text.lower() in ("unpaced", "0"):
        return 0.0
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a rate is > 0, or 0/'unpaced'")
    return value


def add_parser(subparsers: Any) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(CASE, help="the recorder beside simple peers (flock, logging, SQLite), one run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="which writers (default: all; ratios in the main table are to the recorder's)")
    p.add_argument("--rates", nargs="+", type=_rate,
                   help="total records/s across producers; 0 or 'unpaced' for as fast as possible "
                        "(default: 1000 5000 20000 unpaced; --quick: 5000 unpaced)")
    p.add_argument("--producers", type=int, default=4, help="producer processes (default 4)")
    p.add_argument("--seconds", type=float, help="measured seconds per case (default 10; --quick: 1)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per case (default 0.5; --quick: 0.2)")
    p.add_argument("--quick", action="store_true", help="short run (< 1 min): 5k/s and unpaced, 1 s each")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of every case; the table shows the run with the median p99 (default 1)")
    p.add_argument("--sessions", choices=("shared", "per-producer"), default="shared",
                   help="recorder: all producers in one session/file (default, like the peers) or one each")
    p.add_argument("--max-pending", type=int, default=10_000,
                   help="recorder client buffer bound when unpaced (paced: the Client default)")
    p.add_argument("--sqlite-batch", type=int, default=100, help="records per commit of sqlite-100")
    p.add_argument("--config", help="registry TOML of the recorder (default: the shipped one); its a3cp_message "
                                    "must keep durability = \"fsync\" and hash = \"sha256\"")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
    p.add_argument("--profile", action="store_true",
                   help="print the recorder's CPU µs/record by thread and stage (from its stats' profile)")
    p.add_argument("--keep", action="store_true", help="keep the data roots")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG plots")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/compare-<time>.json)")
    p.add_argument("--report", metavar="JSON",
                   help="only redraw the table and plots of an earlier results file (beside it)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode: one case
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point: one case in this process (``--one``), or every case in subprocesses."""
    if args.rates is None:
        args.rates = list(QUICK_RATES if args.quick else DEFAULT_RATES)
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 0.5
    if args.producers < 1 or args.sqlite_batch < 1 or args.repeat < 1:
        raise SystemExit("--producers, --sqlite-batch and --repeat must be >= 1")
    if args.report:
        return _report_only(Path(args.report), args.no_plot)
    args.config_facts = check_config(args.config)
    if args.one:
        return _one(args)
    return _all(args)


def check_config(path: str | None) -> dict[str, str]:
    """The config's digest and a3cp_message policies; refuse one that is not fsync + sha256 (SystemExit)."""
    from recorder.schema.config import load_config

    cfg = load_config(path)
    t = cfg.types.get(SCHEMA_TYPE)
    if t is None:
        raise SystemExit(f"compare: {cfg.source} has no [types.{SCHEMA_TYPE}]")
    got = {"durability": t.durability, "hash": t.hash}
    if got != SHIPPED:
        raise SystemExit(f"compare: every figure is measured with the shipped durability = \"fsync\" and "
                         f"hash = \"sha256\"; {cfg.source} sets {SCHEMA_TYPE} to {got}")
    return {"config": path or "default", "config_source": cfg.source, "config_digest": cfg.digest, **got}


# -- parent: every case in a fresh interpreter ---------------------------------
def _all(args: argparse.Namespace) -> int:
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    chosen_variants = list(dict.fromkeys(args.variants))
    variants = [v for v in SERVED if v in chosen_variants] + [v for v in chosen_variants if v not in SERVED]
    cases = [(rate, v) for rate in args.rates for v in variants]
    t_all = time.monotonic()
    progress(f"compare: {len(variants)} variants x {len(args.rates)} rates, {args.producers} producers, "
             f"{args.seconds:g} s each (+{args.warmup:g} s warm-up), data under {parent}")
    probe_s = 0.3 if args.quick else 1.5
    disk_before = fsync_probe(parent, probe_s)
    progress(f"disk probe: 1 KB append + fdatasync p50 {disk_before['p50_us']:.0f} us, "
             f"p99 {disk_before['p99_us']:.0f} us, max {disk_before['max_us']:.0f} us")
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    runs = [(rep, rate, v) for rep in range(args.repeat) for rate, v in cases]
    for i, (rep, rate, v) in enumerate(runs, 1):
        argv = ["--variants", v, "--rates", repr(rate), "--producers", str(args.producers),
                "--seconds", repr(args.seconds), "--warmup", repr(args.warmup), "--sessions", args.sessions,
                "--max-pending", str(args.max_pending), "--sqlite-batch", str(args.sqlite_batch),
                "--dir", str(parent)]
        if args.config:
            argv += ["--config", args.config]
        if args.keep:
            argv.append("--keep")
        if args.profile:
            argv.append("--profile")
        label = f"{VARIANTS[v].label} @ {rate_label(rate)}"
        progress(f"[{i}/{len(runs)}] {label}{f' (run {rep + 1})' if args.repeat > 1 else ''} ...")
        try:
            r = run_case(CASE, argv, timeout=args.seconds * 6 + 180)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            progress(f"    FAILED: {e}")
            failures.append(label)
            continue
        r["run"] = rep + 1
        results.append(r)
        lat = r["lat_ms"]
        progress(f"    {r['throughput_per_s']:,.0f} records/s; {'durable' if r['durable'] else 'written (not durable)'}"
                 f" p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, max {lat['max']:.3f} ms; record() p50 "
                 f"{r['call_us']['p50']:.1f} us; writer CPU {r['writer']['cpu_pct']:.0f}% "
                 f"({r['writer_cpu_us_per_record']} us/record; all {r['cpu_us_per_record']} us/record); "
                 f"other load {r['other_cpu_cores']:.2f} CPUs; load average {r['loadavg'][0]:.2f}")
    disk_after = fsync_probe(parent, probe_s)
    chosen = median_runs(results)
    rows = summarize(chosen)
    payload: dict[str, Any] = {
        "benchmark": CASE,
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "settings": {"producers": args.producers, "seconds": args.seconds, "warmup": args.warmup,
                     "rates": args.rates, "variants": variants, "sessions": args.sessions,
                     "max_pending_unpaced": args.max_pending, "sqlite_batch": args.sqlite_batch,
                     "repeat": args.repeat, "profile": args.profile, **args.config_facts},
        "variants": {v: VARIANTS[v]._asdict() for v in variants},
        "machine": machine_info(parent),
        "recorder_source": _recorder_source(),
        "fsync_probe": {"before": disk_before, "after": disk_after},
        "summary": rows,
        "failed": failures,
        "results": results,
        "elapsed_s": round(time.monotonic() - t_all, 1),
    }
    path = write_results(CASE, payload, args.out)
    _publish(payload, chosen, path, args.no_plot)
    progress(f"compare: done in {payload['elapsed_s']:.0f} s")
    if failures:
        print(f"FAILED cases: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _publish(payload: dict[str, Any], chosen: list[dict[str, Any]], path: Path, no_plot: bool) -> None:
    """Plots and the Markdown report beside the results file; the report on stdout."""
    plots: list[Path] = []
    if not no_plot and chosen:
        plots = [p for p in (plot_latency(chosen, path.with_name(path.stem + "-latency.png")),
                             plot_rates(payload["summary"], path.with_name(path.stem + "-rates.png"),
                                        payload["machine"]))
                 if p is not None]
    report = markdown_report(payload, [p.name for p in plots])
    path.with_suffix(".md").write_text(report, encoding="utf-8")
    print(report)
    for p in plots:
        print(f"plot: {p}")
    print(f"results: {path} (+ {path.with_suffix('.md').name})")


def _report_only(path: Path, no_plot: bool) -> int:
    """Redraw the table and plots of a results file (for instance after changing how they are drawn)."""
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    chosen = median_runs(payload["results"])
    payload["summary"] = summarize(chosen)
    _publish(payload, chosen, path, no_plot)
    return 0


def _recorder_source() -> dict[str, Any]:
    """The commit and whether recorder/ had uncommitted changes when the run started (shared working trees)."""
    repo = PACKAGE_DIR.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "recorder"], cwd=repo,
                                 capture_output=True, text=True, timeout=5).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "uncommitted": []}
    return {"commit": rev, "uncommitted": [ln[3:] for ln in changed if ln.strip()]}

# -- child: one case -------------------------------------------------------------
def _sqlite_create(path: str) -> None:
    """The peers' database: WAL mode (persistent in the file) and one table, made before producers start."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, record_id TEXT NOT NULL, "
                     "recorded_at TEXT NOT NULL, body TEXT NOT NULL)")
    finally:
        conn.close()


def _stored(variant: str, root: str, n: int) -> int:
    """How many records a peer (or the reference) left on disk (lines or rows), to check that none went missing."""
    if variant.startswith("sqlite"):
        conn = sqlite3.connect(os.path.join(root, SQLITE_FILE))
        try:
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        finally:
            conn.close()
    names = {"logging": [f"log-{i}.jsonl" for i in range(n)], "reference": [_reference.JOURNAL]}.get(
        variant, [JSONL_FILE])
    lines = 0
    for name in names:
        with open(os.path.join(root, name), "rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
    return lines


def _profile_delta(stats0: dict[str, Any] | None, stats1: dict[str, Any] | None) -> dict[str, Any] | None:
    """The recorder's ``profile`` (cumulative) over the measured window; None when it reports none."""
    p1 = (stats1 or {}).get("profile")
    if not isinstance(p1, dict):
        return None
    p0 = (stats0 or {}).get("profile") or {}

    def sub(key: str) -> dict[str, float]:
        before = p0.get(key) or {}
        return {k: round(v - before.get(k, 0.0), 6) for k, v in (p1.get(key) or {}).items()}

    return {"records": p1.get("records", 0) - p0.get("records", 0), "frames": p1.get("frames", 0) - p0.get("frames", 0),
            "threads_cpu_s": sub("threads_cpu_s"), "stages_s": sub("stages_s")}


def _server(variant: str, root: str, config: str | None) -> tuple[Child | None, dict[str, Any]]:
    """Start the process that writes for ``variant`` (the supervised recorder, the reference server), if any."""
    if variant == "recorder":
        cmd = ["-m", "recorder", "run", "--data-root", root] + (["--config", config] if config else [])
        return start_server(cmd, "the recorder")
    if variant == "reference":
        return start_server(["-m", "benchmarks._reference", root], "the reference server")
    if variant.startswith("sqlite"):
        _sqlite_create(os.path.join(root, SQLITE_FILE))
    return None, {}


def _one(args: argparse.Namespace) -> int:
    import psutil

    variant, rate, n = args.variants[0], args.rates[0], args.producers
    spec = VARIANTS[variant]
    per_rate = rate / n
    parent = Path(args.dir) if args.dir else default_data_parent()
    root = os.path.realpath(tempfile.mkdtemp(prefix=f"compare-{variant}-", dir=parent))
    server: Child | None = None
    producers: list[Child] = []
    try:
        server, ready = _server(variant, root, args.config)
        rec = psutil.Process(ready["pid"]) if server is not None else None  # the process that writes
        sup = psutil.Process(server.proc.pid) if server is not None and variant == "recorder" else None
        if rec is not None:
            progress(f"{variant}: server ready (pid {rec.pid})")
        pcmds = []
        for i in range(n):
            pcmd = ["-m", "benchmarks._peers", "--producer", "--variant", variant,
                    "--index", str(i), "--root", root, "--rate", repr(per_rate), "--seconds", repr(args.seconds),
                    "--warmup", repr(args.warmup), "--phase", repr(i / n), "--sessions", args.sessions,
                    "--batch", str(args.sqlite_batch if variant == "sqlite-100" else 1),
                    "--samples", os.path.join(root, f"_samples-{i}")]
            if variant == "recorder" and rate <= 0:
                pcmd += ["--max-pending", str(args.max_pending)]
            if args.config:
                pcmd += ["--config", args.config]
            pcmds.append(pcmd)
        producers = start_producers(pcmds, 90 + 4 * args.warmup)
        progress(f"{variant}: {n} producers warm")

        stats0 = recorder_stats(ready["control"]) if sup is not None else None
        rec_cpu0 = rec.cpu_times() if rec is not None else None
        sup_cpu0 = sup.cpu_times() if sup is not None else None
        me = psutil.Process()
        me_cpu0, sys0 = me.cpu_times(), psutil.cpu_times()
        t_go = time.time()
        go(producers)
        outs = json_lines(producers, args.seconds * 4 + 150)
        t_end = time.time()
        progress(f"{variant}: producers done")
        sys1, me_cpu1 = psutil.cpu_times(), me.cpu_times()
        rec_cpu1 = rec.cpu_times() if rec is not None else None
        rec_cpu_s = cpu_s(rec_cpu1) - cpu_s(rec_cpu0) if rec_cpu1 is not None else 0.0
        sup_cpu_s = cpu_s(sup.cpu_times()) - cpu_s(sup_cpu0) if sup is not None else 0.0
        rec_rss = vm_hwm(rec.pid) if rec is not None else 0
        sup_rss = vm_hwm(sup.pid) if sup is not None else 0
        stats1 = recorder_stats(ready["control"]) if sup is not None else None
        for c in producers:
            c.proc.wait(timeout=30)
        ref_stats = None
        if variant == "reference" and server is not None:
            stop_server(server)
            ref_stats = json.loads(wait_line(server.lines, "{", 30, "the reference server"))

        calls: list[int] = []
        blocked: list[int] = []
        lats: list[int] = []
        for i in range(n):
            calls.extend(load_samples(os.path.join(root, f"_samples-{i}.call")))
            blocked.extend(load_samples(os.path.join(root, f"_samples-{i}.blocked")))
            lats.extend(load_samples(os.path.join(root, f"_samples-{i}.lat")))
        calls.sort()
        blocked.sort()
        lats.sort()
        all_calls = sorted(calls + blocked)
        records = sum(o["records"] for o in outs)
        if len(lats) != records:
            raise RuntimeError(f"{len(lats)} latency samples for {records} records")
        if variant != "recorder":
            stored, sent = _stored(variant, root, n), sum(o["sent_total"] for o in outs)
            if stored != sent:
                raise RuntimeError(f"{variant}: {stored} records on disk, {sent} sent")
        if ref_stats is not None and ref_stats["rejected"]:
            raise RuntimeError(f"reference: {ref_stats['rejected']} records rejected")
        start = min(o["t_start"] for o in outs)
        window = max(o["t_done"] for o in outs) - start
        wall = t_end - t_go
        prod_cpu_s = sum(o["cpu_s"] for o in outs)
        prod_rss = sum(o["maxrss_kib"] * 1024 for o in outs)
        busy = machine_busy_s(sys1) - machine_busy_s(sys0)
        ours = rec_cpu_s + sup_cpu_s + prod_cpu_s + cpu_s(me_cpu1) - cpu_s(me_cpu0)
        writer_cpu_s = rec_cpu_s if rec is not None else prod_cpu_s
        offered = rate * args.seconds
        counters: dict[str, float] = {}
        for o in outs:
            for k, v in (o.get("client_counters") or {}).items():
                counters[k] = counters.get(k, 0) + v
        result: dict[str, Any] = {
            "benchmark": CASE,
            "variant": variant,
            "durability": spec.durability,
            "durable": spec.durable,
            "rate": rate,
            "producers": n,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "records": records,
            "throughput_per_s": round(records / window, 1),
            "send_rate_per_s": round(records / (max(o["t_sent"] for o in outs) - start), 1),
            "window_s": round(window, 4),
            "kept_up": rate <= 0 or (records >= 0.97 * offered and records / window >= 0.95 * rate),
            "call_us": percentiles(all_calls, 1e3),
            "call_unblocked_us": percentiles(calls, 1e3),
            "blocked": {"calls": len(blocked), "total_ms": round(sum(blocked) / 1e6, 3),
                        "max_ms": round(blocked[-1] / 1e6, 3) if blocked else 0.0},
            "client_counters": counters,
            "lat_ms": percentiles(lats, 1e6),
            "call_hist": histogram(all_calls),
            "lat_hist": histogram(lats),
            "writer": {
                "what": {"recorder": "recorder process", "reference": "reference server process"}.get(
                    variant, "producer processes"),
                "cpu_s": round(writer_cpu_s, 3),
                "cpu_pct": round(100 * writer_cpu_s / window, 1),
                "rss_peak_mib": round((rec_rss if rec is not None else prod_rss) / 2**20, 1),
            },
            "producers_cpu_s": round(prod_cpu_s, 3),
            "recorder_cpu_s": round(rec_cpu_s, 3),
            "recorder_cpu_system_s": round(rec_cpu1.system - rec_cpu0.system, 3) if rec_cpu1 and rec_cpu0 else 0.0,
            "server_cpu": {"user_s": round(rec_cpu1.user - rec_cpu0.user, 3),
                           "system_s": round(rec_cpu1.system - rec_cpu0.system, 3)} if rec_cpu1 and rec_cpu0 else None,
            "supervisor_cpu_s": round(sup_cpu_s, 3),
            "cpu_us_per_record": round((prod_cpu_s + rec_cpu_s + sup_cpu_s) / records * 1e6, 1) if records else None,
            "writer_cpu_us_per_record": round(writer_cpu_s / records * 1e6, 1) if records else None,
            "all_rss_peak_mib": round((prod_rss + rec_rss + sup_rss) / 2**20, 1),
            "producer_rss_peak_mib": [round(o["maxrss_kib"] / 1024, 1) for o in outs],
            "other_cpu_cores": round(max(0.0, busy - ours) / wall, 2),
            "loadavg": os.getloadavg(),
            "late": sum(o["late"] for o in outs),
            "lag_max_ms": max(o["lag_max_ms"] for o in outs),
            "config_digest": args.config_facts["config_digest"],
        }
        if stats0 is not None and stats1 is not None:
            t0, t1 = stats0["types"][SCHEMA_TYPE], stats1["types"][SCHEMA_TYPE]
            batches = t1["batches"] - t0["batches"]
            result["recorder_batches"] = batches
            result["recorder_batch_mean"] = round((t1["records"] - t0["records"]) / batches, 2) if batches else None
            result["recorder_receive_to_durable_ms"] = t1["ack_latency_ms"]  # its own view, last 16k records
            result["profile"] = _profile_delta(stats0, stats1)
        if ref_stats is not None:
            result["reference_stats"] = ref_stats  # since its start (warm-up included)
            result["recorder_batch_mean"] = round(ref_stats["records"] / ref_stats["batches"], 2) \
                if ref_stats["batches"] else None
    finally:
        stop_all(producers, [server])
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        progress(f"{variant}: stopped and cleaned up")
    print(json.dumps(result))
    return 0
