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

Results: ``benchmarks/results/compare-<time>.json``, the Markdown table
printed and written beside it (``.md``), and two PNG plots (``-latency.png``:
latency distributions at 5k/s; ``-rates.png``: throughput, p99 latency and
``record()`` p99 against the offered rate). A 1 KB append + fdatasync probe
of the data filesystem runs before and after the cases.

    python -m benchmarks compare                 # 6 variants x 4 rates, 10 s each, ~5 min
    python -m benchmarks compare --quick         # 5k/s and unpaced, 1 s each, < 1 min
    python -m benchmarks compare --variants recorder sqlite-100 --rates 5000 --seconds 5
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import logging
import logging.handlers
import os
import queue
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from ._common import PACKAGE_DIR, default_data_parent, machine_info, progress, run_case, write_results
from .latency import (
    _busy,
    _cdf_points,
    _cpu,
    _fsync_probe,
    _histogram,
    _line_reader,
    _load,
    _percentiles,
    _recorder_stats,
    _wait_line,
)

CASE = "compare"
SCHEMA_TYPE = "a3cp_message"
POOL = 1024  # distinct records per producer, cycled
PLOT_RATE = 5000.0  # the rate whose latency distributions are drawn
SQLITE_FILE = "records.sqlite"
JSONL_FILE = "records.jsonl"


class Variant(NamedTuple):
    """One writer under test."""

    name: str
    label: str
    durability: str
    durable: bool  # False: records are never made durable (page cache only)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("recorder", "recorder", "fdatasync before ack (group commit)", True),
    Variant("flock", "flock + append (A3CP)", "none: page cache, no fsync", False),
    Variant("flock-fsync", "flock + append + fsync", "fsync per record", True),
    Variant("logging", "logging QueueHandler", "none: page cache, listener thread", False),
    Variant("sqlite", "SQLite WAL FULL, 1/commit", "fsync per commit", True),
    Variant("sqlite-100", "SQLite WAL FULL, 100/commit", "fsync per 100-record commit", True),
)}
DEFAULT_RATES = (1000.0, 5000.0, 20000.0, 0.0)  # 0: unpaced
QUICK_RATES = (5000.0, 0.0)
#: Figures compared with the recorder's at the same rate (row key -> larger is better).
FIGURES: dict[str, bool] = {
    "throughput_per_s": True, "call_p50_us": False, "call_p99_us": False, "lat_p50_ms": False,
    "lat_p99_ms": False, "lat_p999_ms": False, "lat_max_ms": False, "writer_cpu_pct": False,
    "cpu_us_per_record": False, "writer_rss_mib": False, "all_rss_mib": False,
}
COLORS = {"recorder": "C0", "flock": "C1", "flock-fsync": "C3", "logging": "C2", "sqlite": "C4",
          "sqlite-100": "C5"}


def _rate(text: str) -> float:
    if text.lower() in ("unpaced", "0"):
        return 0.0
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a rate is > 0, or 0/'unpaced'")
    return value


def rate_label(rate: float) -> str:
    """``1k/s``, ``500/s`` or ``unpaced``."""
    if rate <= 0:
        return "unpaced"
    return f"{rate / 1000:g}k/s" if rate >= 1000 else f"{rate:g}/s"


def add_parser(subparsers: Any) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(CASE, help="the recorder beside simple peers (flock, logging, SQLite), one run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="which writers (default: all; the recorder is the reference for ratios)")
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
    p.add_argument("--config", help="registry TOML of the recorder (default: the shipped one)")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
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
    if args.one:
        return _one(args)
    if args.report:
        return _report_only(Path(args.report), args.no_plot)
    return _all(args)


# -- parent: every case in a fresh interpreter ---------------------------------
def _all(args: argparse.Namespace) -> int:
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    variants = ["recorder"] + [v for v in args.variants if v != "recorder"] if "recorder" in args.variants \
        else list(args.variants)
    cases = [(rate, v) for rate in args.rates for v in variants]
    t_all = time.monotonic()
    progress(f"compare: {len(variants)} variants x {len(args.rates)} rates, {args.producers} producers, "
             f"{args.seconds:g} s each (+{args.warmup:g} s warm-up), data under {parent}")
    probe_s = 0.3 if args.quick else 1.5
    disk_before = _fsync_probe(parent, probe_s)
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
                 f"{r['call_us']['p50']:.1f} us; writer CPU {r['writer']['cpu_pct']:.0f}%; other load "
                 f"{r['other_cpu_cores']:.2f} CPUs")
    disk_after = _fsync_probe(parent, probe_s)
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
                     "repeat": args.repeat, "config": args.config or "default"},
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


def median_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (rate, variant), in first-run order, the run with the median p99 time until durable (or written)."""
    by_case: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault((r["rate"], r["variant"]), []).append(r)
    chosen = []
    for runs in by_case.values():
        runs = sorted(runs, key=lambda r: r["lat_ms"]["p99"])
        chosen.append(runs[(len(runs) - 1) // 2] | {"runs": len(runs)})
    return chosen


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case, with each figure's ratio to the recorder's at the same rate."""
    rows = []
    for r in results:
        c, lat = r["call_us"], r["lat_ms"]
        rows.append({
            "variant": r["variant"], "label": VARIANTS[r["variant"]].label, "rate": r["rate"],
            "rate_label": rate_label(r["rate"]), "durability": VARIANTS[r["variant"]].durability,
            "durable": r["durable"], "records": r["records"], "throughput_per_s": r["throughput_per_s"],
            "call_p50_us": c["p50"], "call_p99_us": c["p99"], "lat_p50_ms": lat["p50"], "lat_p99_ms": lat["p99"],
            "lat_p999_ms": lat["p99.9"], "lat_max_ms": lat["max"], "writer_cpu_pct": r["writer"]["cpu_pct"],
            "cpu_us_per_record": r["cpu_us_per_record"], "writer_rss_mib": r["writer"]["rss_peak_mib"],
            "all_rss_mib": r["all_rss_peak_mib"], "other_cpu_cores": r["other_cpu_cores"],
            "kept_up": r["rate"] <= 0 or (r["records"] >= 0.97 * r["rate"] * r["seconds"]
                                          and r["throughput_per_s"] >= 0.95 * r["rate"]),
            "recorder_batch_mean": r.get("recorder_batch_mean"),
        })
    base = {row["rate"]: row for row in rows if row["variant"] == "recorder"}
    for row in rows:
        b = base.get(row["rate"])
        row["ratio"] = {k: (float(f"{row[k] / b[k]:.3g}") if b and b[k] and row[k] is not None else None)
                        for k in FIGURES}
    return rows


# -- report ------------------------------------------------------------------
def _num(v: float | None) -> str:
    if v is None or v != v:
        return "–"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _ratio(x: float | None) -> str:
    if x is None:
        return ""
    if x >= 100:
        return f" ({x:,.0f}×)"
    if x >= 10:
        return f" ({x:.0f}×)"
    return f" ({x:.2g}×)"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison table: figures, each with its ratio to the recorder's at the same rate."""
    cols = [("throughput_per_s", "records/s"), ("call_p50_us", "record() p50 µs"),
            ("call_p99_us", "record() p99 µs"), ("lat_p50_ms", "durable p50 ms"), ("lat_p99_ms", "durable p99 ms"),
            ("lat_p999_ms", "durable p99.9 ms"), ("lat_max_ms", "durable max ms"),
            ("writer_cpu_pct", "writer CPU %"), ("cpu_us_per_record", "CPU µs/record (all)"),
            ("writer_rss_mib", "writer peak RSS MiB"), ("all_rss_mib", "all peak RSS MiB")]
    head = ["rate", "variant", "durability", *(h for _, h in cols), "other load (CPUs)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(cols) + 1)]
    for row in rows:
        cells = [row["rate_label"], row["label"], row["durability"]]
        for key, _ in cols:
            text = _num(row[key])
            if key == "throughput_per_s" and not row["kept_up"]:
                text += "↓"
            if key.startswith("lat_") and not row["durable"]:
                text = f"*{text}*"
            if row["variant"] != "recorder":
                text += _ratio(row["ratio"].get(key))
            cells.append(text)
        cells.append(f"{row['other_cpu_cores']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(payload: dict[str, Any], plots: Sequence[str]) -> str:
    """Header (machine, settings, noise), the table, and how to read it."""
    m, s = payload["machine"], payload["settings"]
    db, da = payload["fsync_probe"]["before"], payload["fsync_probe"]["after"]
    fs = m.get("data_fs", {})
    src = payload.get("recorder_source") or {"commit": "?", "uncommitted": []}
    out = [
        f"# compare: the recorder beside simple peers ({payload['created']})",
        "",
        f"- machine: {m['cpu_count']} CPU ({m['cpu_model']}), {m['platform']}, Python {m['python']}; data on "
        f"{fs.get('fstype', '?')} ({fs.get('device', '?')}); recorder {m['libraries']['recorder']} ({m['git']}), "
        f"pydantic {m['libraries']['pydantic']}, pyzmq {m['libraries']['pyzmq']}, SQLite {sqlite3.sqlite_version}",
        f"- command: `{payload['command']}`" + (f" (median of {s['repeat']} runs by p99)" if s["repeat"] > 1 else ""),
        f"- recorder source: {src['commit']}" + (f", with uncommitted changes in {', '.join(src['uncommitted'])}"
                                                  if src["uncommitted"] else ", clean"),
        f"- load: {s['producers']} producer processes, ~1 KB `a3cp_message` dicts, {s['seconds']:g} s per case "
        f"after {s['warmup']:g} s warm-up; recorder sessions: {s['sessions']}; unpaced recorder client buffer "
        f"{s['max_pending_unpaced']:,}; sqlite-100 commits {s['sqlite_batch']} records",
        f"- disk (1 KB append + fdatasync, one at a time): before p50 {db['p50_us']:.0f} µs, p99 {db['p99_us']:.0f} µs, "
        f"max {db['max_us']:.0f} µs; after p50 {da['p50_us']:.0f} µs, p99 {da['p99_us']:.0f} µs, "
        f"max {da['max_us']:.0f} µs",
        "",
        markdown_table(payload["summary"]),
        "",
        "Ratios in parentheses: the figure divided by the recorder's at the same rate in this run (records/s: "
        "higher is better; every other column: lower is better). *Italic* latencies are never durable: the "
        "time until the write returned into the page cache. ↓: fewer records/s than offered (the writer could "
        "not keep up). Writer CPU: the recorder process (100% = one core); for the peers, the "
        "producers themselves, which do the writing. CPU µs/record (all): producers + recorder + supervisor. "
        "Peak RSS: VmHWM; writer = the recorder process, or the sum of the producers for the peers; all = "
        "every process of the variant. Other load: CPUs that other processes of the machine used meanwhile.",
    ]
    if payload["failed"]:
        out += ["", f"Failed cases: {', '.join(payload['failed'])}"]
    if plots:
        out += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"


# -- plots -------------------------------------------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        progress("matplotlib is not installed: no plots drawn (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(results: list[dict[str, Any]], path: Path) -> Path | None:
    """CDF and tail of the time until durable (or written), and the record() tail, per variant at 5k/s."""
    plt = _pyplot()
    paced = sorted({r["rate"] for r in results if r["rate"] > 0})
    if plt is None or not paced:
        return None
    rate = PLOT_RATE if PLOT_RATE in paced else paced[len(paced) // 2]
    chosen = [r for r in results if r["rate"] == rate]
    fig, (ax_cdf, ax_tail, ax_call) = plt.subplots(1, 3, figsize=(16, 5.4))
    for r in chosen:
        style = {"color": COLORS.get(r["variant"]), "linestyle": "-" if r["durable"] else "--"}
        name = VARIANTS[r["variant"]].label + ("" if r["durable"] else " (written, not durable)")
        xs, cdf = _cdf_points(r["lat_hist"])
        xs = [x / 1e3 for x in xs]
        ax_cdf.step(xs, cdf, where="post", label=name, **style)
        tail = [(x, 1 - y) for x, y in zip(xs, cdf) if 1 - y > 0]
        if tail:
            ax_tail.step([t[0] for t in tail], [t[1] for t in tail], where="post", label=name, **style)
        xs, cdf = _cdf_points(r["call_hist"])
        tail = [(x, 1 - y) for x, y in zip(xs, cdf) if 1 - y > 0]
        if tail:
            ax_call.step([t[0] for t in tail], [t[1] for t in tail], where="post", label=name, **style)
    for ax in (ax_cdf, ax_tail):
        ax.set_xscale("log")
        ax.set_xlabel("record() to durable (dashed: to write return), ms")
        ax.grid(True, which="both", alpha=0.3)
    ax_cdf.set_ylabel("fraction of records <= x")
    ax_cdf.set_title(f"time until durable at {rate_label(rate)}: CDF")
    ax_tail.set_yscale("log")
    ax_tail.set_ylabel("fraction of records > x")
    ax_tail.set_title("time until durable: tail (1 - CDF)")
    ax_call.set_xscale("log")
    ax_call.set_yscale("log")
    ax_call.set_xlabel("record() call time, µs")
    ax_call.set_ylabel("fraction of calls > x")
    ax_call.set_title("record() call time: tail")
    ax_call.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"recorder vs peers at {rate_label(rate)}, {chosen[0]['producers']} producers", fontsize=10)
    handles, labels = ax_cdf.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_rates(rows: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> Path | None:
    """Records/s, p99 time until durable and record() p99 against the offered rate (log scales)."""
    plt = _pyplot()
    if plt is None or not rows:
        return None
    paced = sorted({r["rate"] for r in rows if r["rate"] > 0})
    x_unpaced = (max(paced) if paced else 1000.0) * 3

    def x_of(rate: float) -> float:
        return rate if rate > 0 else x_unpaced

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = (("throughput_per_s", "records/s achieved"), ("lat_p99_ms", "p99 record() to durable, ms"),
              ("call_p99_us", "record() call p99, µs"))
    for ax, (key, ylabel) in zip(axes, panels):
        for v in dict.fromkeys(r["variant"] for r in rows):
            pts = sorted((x_of(r["rate"]), r[key]) for r in rows if r["variant"] == v and r[key] is not None)
            durable = VARIANTS[v].durable or key == "call_p99_us" or key == "throughput_per_s"
            name = VARIANTS[v].label + ("" if durable or VARIANTS[v].durable else " (written, not durable)")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=COLORS.get(v),
                    linestyle="-" if durable else "--", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [*paced, x_unpaced]
        ax.set_xticks(ticks)
        ax.set_xticklabels([rate_label(t).replace("/s", "") for t in paced] + ["unpaced"])
        ax.minorticks_off()
        ax.set_xlabel("offered records/s (all producers)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if paced:
        axes[0].plot(paced, paced, color="grey", linestyle=":", linewidth=1, label="offered")
    axes[0].set_title("throughput")
    axes[1].set_title("p99 time until durable (dashed: written)")
    axes[2].set_title("record() call time, p99")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"recorder vs peers: {machine['cpu_count']} CPU, {machine.get('data_fs', {}).get('fstype', '?')}, "
                 f"recorder {machine['git']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# -- child: one case -------------------------------------------------------------
def _vm_hwm(pid: int) -> int:
    """Peak resident set size of ``pid`` in bytes (VmHWM), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


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
    """How many records a peer left on disk (lines or rows), to check that none went missing."""
    if variant.startswith("sqlite"):
        conn = sqlite3.connect(os.path.join(root, SQLITE_FILE))
        try:
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        finally:
            conn.close()
    names = [f"log-{i}.jsonl" for i in range(n)] if variant == "logging" else [JSONL_FILE]
    lines = 0
    for name in names:
        with open(os.path.join(root, name), "rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
    return lines


def _one(args: argparse.Namespace) -> int:
    import psutil

    variant, rate, n = args.variants[0], args.rates[0], args.producers
    spec = VARIANTS[variant]
    per_rate = rate / n
    parent = Path(args.dir) if args.dir else default_data_parent()
    root = os.path.realpath(tempfile.mkdtemp(prefix=f"compare-{variant}-", dir=parent))
    sup = None
    rec = None
    ready: dict[str, Any] = {}
    producers: list[subprocess.Popen[str]] = []
    try:
        if variant == "recorder":
            cmd = [sys.executable, "-m", "recorder", "run", "--data-root", root]
            if args.config:
                cmd += ["--config", args.config]
            sup = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=PACKAGE_DIR.parent)
            ready = json.loads(_wait_line(_line_reader(sup.stdout), "READY ", 60, "the recorder")[6:])
            rec = psutil.Process(ready["pid"])
            progress(f"{variant}: recorder ready (pid {rec.pid})")
        elif variant.startswith("sqlite"):
            _sqlite_create(os.path.join(root, SQLITE_FILE))
        for i in range(n):
            pcmd = [sys.executable, "-m", "benchmarks.compare", "--producer", "--variant", variant,
                    "--index", str(i), "--root", root, "--rate", repr(per_rate), "--seconds", repr(args.seconds),
                    "--warmup", repr(args.warmup), "--phase", repr(i / n), "--sessions", args.sessions,
                    "--batch", str(args.sqlite_batch if variant == "sqlite-100" else 1),
                    "--samples", os.path.join(root, f"_samples-{i}")]
            if variant == "recorder" and rate <= 0:
                pcmd += ["--max-pending", str(args.max_pending)]
            if args.config:
                pcmd += ["--config", args.config]
            producers.append(subprocess.Popen(pcmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                              cwd=PACKAGE_DIR.parent))
        lines = [_line_reader(p.stdout) for p in producers]
        for i, q in enumerate(lines):
            _wait_line(q, "WARM", 90 + 4 * args.warmup, f"producer {i}")
        progress(f"{variant}: {n} producers warm")

        stats0 = _recorder_stats(ready["control"]) if rec is not None else None
        rec_cpu0 = rec.cpu_times() if rec is not None else None
        sup_proc = psutil.Process(sup.pid) if sup is not None else None
        sup_cpu0 = sup_proc.cpu_times() if sup_proc is not None else None
        me = psutil.Process()
        me_cpu0, sys0 = me.cpu_times(), psutil.cpu_times()
        t_go = time.time()
        for p in producers:
            assert p.stdin is not None
            p.stdin.write("GO\n")
            p.stdin.flush()
        outs = [json.loads(_wait_line(q, "{", args.seconds * 4 + 150, f"producer {i}"))
                for i, q in enumerate(lines)]
        t_end = time.time()
        progress(f"{variant}: producers done")
        sys1, me_cpu1 = psutil.cpu_times(), me.cpu_times()
        rec_cpu1 = rec.cpu_times() if rec is not None else None
        rec_cpu_s = _cpu(rec_cpu1) - _cpu(rec_cpu0) if rec is not None else 0.0
        sup_cpu_s = _cpu(sup_proc.cpu_times()) - _cpu(sup_cpu0) if sup_proc is not None else 0.0
        rec_rss = _vm_hwm(rec.pid) if rec is not None else 0
        sup_rss = _vm_hwm(sup.pid) if sup is not None else 0
        stats1 = _recorder_stats(ready["control"]) if rec is not None else None
        for p in producers:
            p.wait(timeout=30)

        calls: list[int] = []
        lats: list[int] = []
        for i in range(n):
            calls.extend(_load(os.path.join(root, f"_samples-{i}.call")))
            lats.extend(_load(os.path.join(root, f"_samples-{i}.lat")))
        calls.sort()
        lats.sort()
        records = sum(o["records"] for o in outs)
        if len(lats) != records:
            raise RuntimeError(f"{len(lats)} latency samples for {records} records")
        if variant != "recorder":
            stored, sent = _stored(variant, root, n), sum(o["sent_total"] for o in outs)
            if stored != sent:
                raise RuntimeError(f"{variant}: {stored} records on disk, {sent} sent")
        start = min(o["t_start"] for o in outs)
        window = max(o["t_done"] for o in outs) - start
        wall = t_end - t_go
        prod_cpu_s = sum(o["cpu_s"] for o in outs)
        prod_rss = sum(o["maxrss_kib"] * 1024 for o in outs)
        busy = _busy(sys1) - _busy(sys0)
        ours = rec_cpu_s + sup_cpu_s + prod_cpu_s + _cpu(me_cpu1) - _cpu(me_cpu0)
        writer_cpu_s = rec_cpu_s if rec is not None else prod_cpu_s
        offered = rate * args.seconds
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
            "call_us": _percentiles(calls, 1e3),
            "lat_ms": _percentiles(lats, 1e6),
            "call_hist": _histogram(calls),
            "lat_hist": _histogram(lats),
            "writer": {
                "what": "recorder process" if rec is not None else "producer processes",
                "cpu_s": round(writer_cpu_s, 3),
                "cpu_pct": round(100 * writer_cpu_s / window, 1),
                "rss_peak_mib": round((rec_rss if rec is not None else prod_rss) / 2**20, 1),
            },
            "producers_cpu_s": round(prod_cpu_s, 3),
            "recorder_cpu_s": round(rec_cpu_s, 3),
            "recorder_cpu_system_s": round(rec_cpu1.system - rec_cpu0.system, 3) if rec_cpu1 and rec_cpu0 else 0.0,
            "supervisor_cpu_s": round(sup_cpu_s, 3),
            "cpu_us_per_record": round((prod_cpu_s + rec_cpu_s + sup_cpu_s) / records * 1e6, 1) if records else None,
            "writer_cpu_us_per_record": round(writer_cpu_s / records * 1e6, 1) if records else None,
            "all_rss_peak_mib": round((prod_rss + rec_rss + sup_rss) / 2**20, 1),
            "producer_rss_peak_mib": [round(o["maxrss_kib"] / 1024, 1) for o in outs],
            "other_cpu_cores": round(max(0.0, busy - ours) / wall, 2),
            "loadavg": os.getloadavg(),
            "late": sum(o["late"] for o in outs),
            "lag_max_ms": max(o["lag_max_ms"] for o in outs),
        }
        if stats0 is not None and stats1 is not None:
            t0, t1 = stats0["types"][SCHEMA_TYPE], stats1["types"][SCHEMA_TYPE]
            batches = t1["batches"] - t0["batches"]
            result["recorder_batches"] = batches
            result["recorder_batch_mean"] = round((t1["records"] - t0["records"]) / batches, 2) if batches else None
            result["recorder_receive_to_durable_ms"] = t1["ack_latency_ms"]  # its own view, last 16k records
    finally:
        for p in producers:
            if p.poll() is None:
                p.kill()
                p.wait()
        if sup is not None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        progress(f"{variant}: stopped and cleaned up")
    print(json.dumps(result))
    return 0


# -- producer process: the writers ---------------------------------------------
def _now_iso() -> str:
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class _Peer:
    """Validate like the recorder, build the A3CP envelope line; subclasses write it."""

    def __init__(self) -> None:
        from recorder.a3cp import A3CPMessage

        self._model = A3CPMessage
        self.done = array("q")  # ns from record() to durable (or written)

    def encode(self, d: dict[str, Any]) -> tuple[Any, str, str]:
        """(validated model, recorded_at, the JSONL line without its newline)."""
        m = self._model.model_validate(d)
        at = _now_iso()
        return m, at, '{"recorded_at":"' + at + '","event":' + m.model_dump_json() + "}"

    def record(self, d: dict[str, Any], t0: int) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Everything recorded so far written (and durable, where the peer makes it so)."""

    def reset(self) -> None:
        del self.done[:]

    def samples(self) -> array[int]:
        return self.done

    def close(self) -> None:
        pass


class _FlockPeer(_Peer):
    """The original A3CP append: open O_APPEND, flock, one write, [fsync], close."""

    def __init__(self, path: str, fsync: bool) -> None:
        super().__init__()
        self.path, self.fsync = path, fsync

    def record(self, d: dict[str, Any], t0: int) -> None:
        data = (self.encode(d)[2] + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.write(fd, data) != len(data):
                raise OSError("short write")
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        self.done.append(time.perf_counter_ns() - t0)


class _TimedFileHandler(logging.FileHandler):
    """A FileHandler that notes when each record's write returned."""

    def __init__(self, path: str, done: array[int]) -> None:
        super().__init__(path, encoding="utf-8")
        self.done = done

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.done.append(time.perf_counter_ns() - record.t0)  # type: ignore[attr-defined]


class _LoggingPeer(_Peer):
    """logger.info -> QueueHandler -> SimpleQueue -> QueueListener thread -> FileHandler (own file)."""

    def __init__(self, path: str, index: int) -> None:
        super().__init__()
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.logger = logging.getLogger(f"benchmarks.compare.{index}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(logging.handlers.QueueHandler(q))
        self.handler = _TimedFileHandler(path, self.done)
        self.listener = logging.handlers.QueueListener(q, self.handler)
        self.listener.start()

    def record(self, d: dict[str, Any], t0: int) -> None:
        self.logger.info(self.encode(d)[2], extra={"t0": t0})

    def flush(self) -> None:
        self.listener.stop()  # drains the queue, joins the thread
        self.listener.start()

    def close(self) -> None:
        self.listener.stop()
        self.handler.close()


class _SqlitePeer(_Peer):
    """INSERT into a WAL database with synchronous=FULL; commit per record or per ``batch`` records."""

    SQL = "INSERT INTO records (record_id, recorded_at, body) VALUES (?, ?, ?)"

    def __init__(self, path: str, batch: int) -> None:
        super().__init__()
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None)  # autocommit unless BEGIN
        self.conn.execute("PRAGMA synchronous=FULL")
        self.batch = batch
        self.rows: list[tuple[str, str, str]] = []
        self.t0s: list[int] = []

    def record(self, d: dict[str, Any], t0: int) -> None:
        m, at, line = self.encode(d)
        row = (str(m.record_id), at, line)
        if self.batch == 1:
            self.conn.execute(self.SQL, row)
            self.done.append(time.perf_counter_ns() - t0)
            return
        self.rows.append(row)
        self.t0s.append(t0)
        if len(self.rows) >= self.batch:
            self._commit()

    def _commit(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(self.SQL, self.rows)
        self.conn.execute("COMMIT")
        now = time.perf_counter_ns()
        self.done.extend(now - t for t in self.t0s)
        self.rows.clear()
        self.t0s.clear()

    def flush(self) -> None:
        if self.rows:
            self._commit()

    def close(self) -> None:
        self.conn.close()


class _RecorderPeer(_Peer):
    """recorder.Client: record() pushes; durable when the recorder's ack arrives."""

    def __init__(self, a: argparse.Namespace, user: str, session: str) -> None:
        from recorder.client import Client

        kw: dict[str, Any] = {"max_pending": a.max_pending} if a.max_pending else {}
        self.client = Client(config=a.config, data_root=a.root, user_id=user, session_id=session,
                             source="benchmark", timeout=120, **kw)

    def record(self, d: dict[str, Any], t0: int) -> None:
        self.client.record(d, schema_type=SCHEMA_TYPE)

    def flush(self) -> None:
        self.client.flush(timeout=300)

    def reset(self) -> None:
        self.client.latencies_ns = deque(maxlen=50_000_000)

    def samples(self) -> array[int]:
        return array("q", self.client.latencies_ns)

    def close(self) -> None:
        self.client.close()


def _producer(argv: Sequence[str] | None = None) -> int:
    """One producer: warm up, wait for GO on stdin, send, flush, write samples, print a JSON line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare --producer")
    ap.add_argument("--producer", action="store_true")
    ap.add_argument("--variant", choices=list(VARIANTS), required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--config")
    ap.add_argument("--rate", type=float, required=True, help="records/s of this producer; 0: unpaced")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--warmup", type=float, required=True)
    ap.add_argument("--phase", type=float, default=0.0, help="start this fraction of a period late")
    ap.add_argument("--sessions", default="shared")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-pending", type=int, default=0)
    ap.add_argument("--samples", required=True)
    a = ap.parse_args(argv)

    from recorder.testing import sample_message

    if a.sessions == "shared":
        user, session = "bench", "sess_bench"
    else:
        user, session = f"bench{a.index:02d}", f"sess_bench_{a.index:02d}"
    pool = [sample_message(user, session, a.index * POOL + i) for i in range(POOL)]
    writer: _Peer
    if a.variant == "recorder":
        writer = _RecorderPeer(a, user, session)
    elif a.variant in ("flock", "flock-fsync"):
        writer = _FlockPeer(os.path.join(a.root, JSONL_FILE), fsync=a.variant == "flock-fsync")
    elif a.variant == "logging":
        writer = _LoggingPeer(os.path.join(a.root, f"log-{a.index}.jsonl"), a.index)
    else:
        writer = _SqlitePeer(os.path.join(a.root, SQLITE_FILE), a.batch)
    items = itertools.cycle(pool)

    def send(seconds: float, calls: array[int] | None) -> tuple[int, float, int]:
        """Send for ``seconds`` on a deadline schedule (or unpaced); (records, max lag s, late records)."""
        record, clock, clock_ns, sleep = writer.record, time.perf_counter, time.perf_counter_ns, time.sleep
        count, lag_max, late = 0, 0.0, 0
        t0 = clock()
        end = t0 + seconds
        if a.rate > 0:
            period = 1.0 / a.rate
            t0 += a.phase * period  # producers interleave instead of ticking together
            while True:
                due = t0 + count * period
                now = clock()
                if due >= end or now >= end:  # behind schedule: stop on time all the same
                    break
                if now < due:
                    sleep(due - now)  # pacing a capture loop, not waiting on a condition
                else:
                    lag_max = max(lag_max, now - due)
                    late += now - due > period
                rec = next(items)
                s0 = clock_ns()
                record(rec, s0)
                s1 = clock_ns()
                if calls is not None:
                    calls.append(s1 - s0)
                count += 1
        else:
            while clock() < end:
                rec = next(items)
                s0 = clock_ns()
                record(rec, s0)
                s1 = clock_ns()
                if calls is not None:
                    calls.append(s1 - s0)
                count += 1
        return count, lag_max, late

    warm, _, _ = send(a.warmup, None)
    writer.flush()
    writer.reset()
    print("WARM", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1
    calls = array("q")
    cpu0 = os.times()
    t_start = time.time()
    records, lag_max, late = send(a.seconds, calls)
    t_sent = time.time()
    writer.flush()
    t_done = time.time()
    cpu1 = os.times()
    with open(a.samples + ".call", "wb") as f:
        calls.tofile(f)
    with open(a.samples + ".lat", "wb") as f:
        writer.samples().tofile(f)
    writer.close()
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    out = {"index": a.index, "records": records, "sent_total": warm + records, "t_start": t_start,
           "t_sent": t_sent, "t_done": t_done, "cpu_s": round(cpu_s, 3),
           "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "lag_max_ms": round(lag_max * 1e3, 3), "late": late}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    if "--producer" in sys.argv[1:]:
        sys.exit(_producer())
    sys.exit("usage: python -m benchmarks compare ... (this module is the compare case; see --help there)")
