"""Cost of sealing a segment: manifest (JSONL) and Parquet publication, in ms per 10k records.

``python -m benchmarks seal`` writes N records of each case's type into a
fresh Store, closes the segment, and times the Sealer's work on it (read,
manifest, catalog entry; for Parquet also conversion, fsync'd publication
and journal removal). Each case runs in a fresh subprocess and prints one
JSON line; the parent writes all results to benchmarks/results/seal-*.json
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import default_data_parent, machine_info, progress, run_case, write_results

CASE = "seal"
CASES = {
    # name: (schema type, format, record factory name)
    "a3cp_message-jsonl": ("a3cp_message", "jsonl", "sample_message"),
    "a3cp_message-parquet": ("a3cp_message", "parquet", "sample_message"),
    "raw_action-parquet": ("raw_action", "parquet", "sample_raw_action"),
}

_CONFIG = """
[recorder]
min_free_bytes = 0
[types.{stype}]
model = "{model}"
format = "{fmt}"
path = "seg/{{schema_type}}_{{segment:04d}}.{ext}"
max_record_bytes = 1048576
"""
_MODELS = {"a3cp_message": "recorder.a3cp:A3CPMessage", "raw_action": "recorder.a3cp:RawActionRecord"}


def add_parser(subparsers: Any) -> None:
    """Add the ``seal`` subcommand."""
    p = subparsers.add_parser(CASE, help="cost of sealing a segment (manifest, Parquet), ms per 10k records",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--records", type=int, default=10_000, help="records per segment (default 10000)")
    p.add_argument("--repeat", type=int, default=3, help="segments sealed per case; the table shows the median")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
    p.add_argument("--out", help="results JSON path")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One case in this process (``--one``), or every case in subprocesses."""
    if args.one:
        return _one(args)
    parent = Path(args.dir) if args.dir else default_data_parent()
    results = []
    for name in args.case:
        progress(f"seal: {name} ({args.records} records x {args.repeat})")
        argv = ["--case", name, "--records", str(args.records), "--repeat", str(args.repeat), "--dir", str(parent)]
        results.append(run_case(CASE, argv))
    path = write_results(CASE, {"machine": machine_info(parent), "results": results}, args.out)
    print("| case | records | journal MB | seal ms (median) | ms per 10k records | parquet MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['records']} | {r['journal_bytes'] / 1e6:.1f} | {r['seal_ms_median']:.0f} "
              f"| {r['ms_per_10k']:.0f} | {r['parquet_bytes'] / 1e6:.2f} |")
    print(f"\nresults: {path}")
    return 0


def _one(args: argparse.Namespace) -> int:
    from recorder import Store, testing
    from recorder.config import parse_config
    from recorder.protocol import Record
    from recorder.validation import encode_record
    from recorder.writer import Entry

    name = args.case[0]
    stype, fmt, factory = CASES[name]
    make = getattr(testing, factory)
    parent = Path(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="seal-", dir=parent))
    text = _CONFIG.format(stype=stype, model=_MODELS[stype], fmt=fmt, ext=fmt)
    times, jbytes, pbytes = [], 0, 0
    try:
        with Store(parse_config(text, "<seal benchmark>"), data_root=root) as store:
            raws = [encode_record(make(i=i)) for i in range(args.records)]

            accs = [store.check(Record("inproc", 0, stype, r)) for r in raws]
            w = store.writers[stype]
            for _ in range(args.repeat):
                for k in range(0, len(accs), 512):
                    w.write([Entry(a, store.seq.take(), time.time_ns(), "bench", 0) for a in accs[k:k + 512]])
                (rel,) = list(w.open)
                jbytes = w.open[rel].size
                w.seal(rel)  # closes the journal and queues it: the sealer thread does the work
                t0 = time.perf_counter()
                store.sealer.wait_idle(600)
                times.append((time.perf_counter() - t0) * 1000)
            if store.sealer.errors:
                raise RuntimeError(store.sealer.errors[0])
            pbytes = sum(p.stat().st_size for p in root.rglob("*.parquet")) // max(1, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = statistics.median(times)
    print(json.dumps({"case": name, "schema_type": stype, "format": fmt, "records": args.records,
                      "journal_bytes": jbytes, "parquet_bytes": pbytes, "seal_ms": times,
                      "seal_ms_median": med, "ms_per_10k": med * 10_000 / args.records}))
    return 0
