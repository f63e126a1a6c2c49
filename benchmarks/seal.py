"""Cost of sealing a segment, old conversion against new, and the ack latency while a segment seals.

``python -m benchmarks seal`` writes N records of each case's type into a
fresh Store, closes the segment, and times the Sealer's work on it (read,
manifest, catalog entry; for Parquet also conversion, fsync'd publication
and journal removal). A case ending in ``-old`` does the same with the
former value-by-value conversion (``tests/unit/parquet_oracle.py``) and the
former full decode of every line, patched in, so one run compares both.
Each case also times the conversion alone (``to_table``), old and new, on
the same lines. Then (unless ``--no-ack``) the ``ack`` case runs a
supervised recorder, sends ``a3cp_message`` records at ``--rate`` (1k/s) for
``--seconds`` while nothing seals, then lets a ``raw_action`` segment of N
records seal while the same traffic goes on, and reports the durable-ack
latency of both windows (``benchmarks/_seal_ack.py``). Each case runs in a
fresh subprocess and prints one JSON line; the parent writes all results,
with the load average before and after, to benchmarks/results/seal-*.json
and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from recorder.storage.formats.parquet import to_table as _bulk_to_table

from . import _seal_ack
from ._common import default_data_parent, machine_info, progress, run_case, write_results

CASE = "seal"
CASES = {
    # name: (schema type, format, record factory name)
    "a3cp_message-jsonl": ("a3cp_message", "jsonl", "sample_message"),
    "a3cp_message-parquet": ("a3cp_message", "parquet", "sample_message"),
    "raw_action-parquet": ("raw_action", "parquet", "sample_raw_action"),
    "a3cp_message-parquet-old": ("a3cp_message", "parquet", "sample_message"),
    "raw_action-parquet-old": ("raw_action", "parquet", "sample_raw_action"),
}
_ORACLE = Path(__file__).resolve().parent.parent / "tests" / "unit"  # parquet_oracle.py: the former conversion

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
    p.add_argument("--case", nargs="+", choices=[*CASES, "ack"], default=list(CASES))
    p.add_argument("--records", type=int, default=10_000, help="records per segment (default 10000)")
    p.add_argument("--repeat", type=int, default=3, help="segments sealed per case; the table shows the median")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
    p.add_argument("--out", help="results JSON path")
    p.add_argument("--rate", type=float, default=1000.0, help="ack case: a3cp_message records/s (default 1000)")
    p.add_argument("--seconds", type=float, default=5.0, help="ack case: seconds of idle traffic (default 5)")
    p.add_argument("--no-ack", action="store_true", help="skip the ack-latency-while-sealing case")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One case in this process (``--one``), or every case in subprocesses."""
    if args.one:
        return _seal_ack.one(args) if args.case == ["ack"] else _one(args)
    parent = Path(args.dir) if args.dir else default_data_parent()
    load0 = os.getloadavg()
    results = []
    for name in args.case:
        progress(f"seal: {name} ({args.records} records x {args.repeat})")
        argv = ["--case", name, "--records", str(args.records), "--repeat", str(args.repeat), "--dir", str(parent)]
        results.append(run_case(CASE, argv))
    ack = None
    if not args.no_ack:
        progress(f"seal: ack latency at {args.rate:g}/s, idle then while a {args.records}-record segment seals")
        ack = run_case(CASE, ["--case", "ack", "--records", str(args.records), "--rate", repr(args.rate),
                              "--seconds", repr(args.seconds), "--dir", str(parent)], timeout=600)
    load1 = os.getloadavg()
    path = write_results(CASE, {"machine": machine_info(parent), "loadavg_before": load0, "loadavg_after": load1,
                                "results": results, "ack": ack}, args.out)
    print("| case | records | journal MB | seal ms (median) | ms per 10k records | to_table old ms | "
          "to_table new ms | parquet MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        old, new = r.get("convert_old_ms"), r.get("convert_new_ms")
        print(f"| {r['case']} | {r['records']} | {r['journal_bytes'] / 1e6:.1f} | {r['seal_ms_median']:.0f} "
              f"| {r['ms_per_10k']:.0f} | {'-' if old is None else f'{old:.0f}'} "
              f"| {'-' if new is None else f'{new:.0f}'} | {r['parquet_bytes'] / 1e6:.2f} |")
    if ack is not None:
        print()
        print(_seal_ack.table(ack))
    print(f"\nload average (1, 5, 15 min): before {_load(load0)}, after {_load(load1)}")
    print(f"results: {path}")
    return 0


def _load(avg: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in avg)


def _one(args: argparse.Namespace) -> int:
    from recorder import Store, testing
    from recorder.schema.config import parse_config
    from recorder.protocol import Record
    from recorder.schema.validation import encode_record
    from recorder.storage.writer import Entry

    name = args.case[0]
    stype, fmt, factory = CASES[name]
    sys.path.insert(0, str(_ORACLE))
    from parquet_oracle import old_to_table

    from recorder.storage import segments
    from recorder.storage.formats import parquet

    def old_convert(lines: Any, model_for: Any) -> Any:
        return old_to_table([msgspec.json.decode(line) for line in lines], model_for)

    if name.endswith("-old"):  # the sealer as it was: every line decoded whole, twice, and converted value by value
        segments._summary = msgspec.json.decode  # type: ignore[assignment]
        parquet.to_table = old_convert  # type: ignore[assignment]
    make = getattr(testing, factory)
    parent = Path(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="seal-", dir=parent))
    text = _CONFIG.format(stype=stype, model=_MODELS[stype], fmt=fmt, ext=fmt)
    times, jbytes, pbytes = [], 0, 0
    convert: dict[str, list[float]] = {"old": [], "new": []}
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
                if fmt == "parquet":  # the conversion alone, old and new, on the same lines
                    lines = [ln for ln in (root / rel).read_bytes().split(b"\n")[1:] if ln]
                    spec = store.registry.get(stype)
                    for label, fn in (("old", old_convert), ("new", _bulk_to_table)):
                        t0 = time.perf_counter()
                        fn(lines, spec.model_for)
                        convert[label].append((time.perf_counter() - t0) * 1000)
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
                      "seal_ms_median": med, "ms_per_10k": med * 10_000 / args.records,
                      "convert_old_ms": statistics.median(convert["old"]) if convert["old"] else None,
                      "convert_new_ms": statistics.median(convert["new"]) if convert["new"] else None}))
    return 0
