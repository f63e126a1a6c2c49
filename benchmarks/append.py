"""In-process append throughput of the journal path, with and without fdatasync.

Two layers are measured, each in a fresh subprocess per case:

- ``storage``: ``TypeWriter.write`` of pre-validated entries (numbering,
  envelope encoding, hash chain, one write and, with ``fsync``, one
  fdatasync per batch): the storage layer alone.
- ``store``: what ``Store.record`` does per record (validate raw JSON bytes
  with ``Store.check``, number it, build the entry) followed by one
  ``TypeWriter.write`` per batch. With batch 1 this is ``Store.record``.

Records are ``recorder.testing.sample_message`` (~0.9 KB of JSON, ~1.3 KB
per stored line), all for one user and session, so every batch goes to one
file. ``durability="os"`` skips the fdatasync of appends (page cache only).

    python -m benchmarks append                      # all 8 cases, ~25 s
    python -m benchmarks append --batch 1 8 64 512 --seconds 3
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import default_data_parent, machine_info, markdown_table, progress, run_case, write_results

CASE = "append"
SCHEMA_TYPE = "a3cp_message"
POOL = 4096  # distinct records, cycled
LAYERS = ("storage", "store")
DURABILITY = ("fsync", "os")


def add_parser(subparsers: Any) -> None:
    """Add the ``append`` subcommand."""
    p = subparsers.add_parser(CASE, help="in-process append throughput (storage layer and validate+write)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", nargs="+", choices=LAYERS, default=list(LAYERS),
                   help="storage: TypeWriter.write of pre-validated entries; store: validate + write")
    p.add_argument("--durability", nargs="+", choices=DURABILITY, default=list(DURABILITY),
                   help="fsync: one fdatasync per batch; os: page cache only")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 64], help="records per write (default: 1 64)")
    p.add_argument("--seconds", type=float, default=2.0, help="timed run per case (default 2.0)")
    p.add_argument("--records", type=int, default=0, help="stop a case after this many records (0: time only)")
    p.add_argument("--warmup", type=float, default=0.3, help="untimed seconds per case before measuring")
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the table shows the median")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data roots")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/append-<time>.json)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode: one case
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point: one case in this process (``--one``), or every case in subprocesses."""
    if args.one:
        return _one(args)
    return _all(args)


# -- parent: run every case in a fresh interpreter ----------------------------
def _all(args: argparse.Namespace) -> int:
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    cases = list(itertools.product(args.layer, args.durability, args.batch))
    progress(f"append: {len(cases)} cases x {args.repeat}, ~{args.seconds:g} s each, data under {parent}")
    results: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        for i, (layer, durability, batch) in enumerate(cases, 1):
            argv = ["--layer", layer, "--durability", durability, "--batch", str(batch),
                    "--seconds", str(args.seconds), "--records", str(args.records),
                    "--warmup", str(args.warmup), "--dir", str(parent)]
            if args.keep:
                argv.append("--keep")
            label = f"{layer}/{durability}/batch {batch}"
            progress(f"[{i}/{len(cases)}{f' run {rep + 1}' if args.repeat > 1 else ''}] {label} ...")
            r = run_case(CASE, argv, timeout=max(120.0, 20 * args.seconds))
            r["run"] = rep + 1
            results.append(r)
            progress(f"    {r['records_per_s']:,.0f} records/s ({r['records']:,} records in {r['seconds']:.2f} s, "
                     f"batch p50 {r['batch_us_p50']:.0f} us, p99 {r['batch_us_p99']:.0f} us)")
    rows = _summarize(results)
    payload = {
        "benchmark": CASE,
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(parent),
        "summary": rows,
        "results": results,
    }
    path = write_results(CASE, payload, args.out)
    progress(f"results written to {path}")
    m = payload["machine"]
    print(f"append throughput: {m['cpu_count']} CPU ({m['cpu_model']}), Python {m['python']}, "
          f"{m['data_fs']['fstype']} on {m['data_fs']['device']}, recorder {m['libraries']['recorder']} "
          f"({m['git']}), msgspec {m['libraries']['msgspec']}, pydantic {m['libraries']['pydantic']}")
    print()
    print(markdown_table(rows, [
        ("layer", "layer"), ("durability", "durability"), ("batch", "batch"), ("records", "records"),
        ("seconds", "seconds"), ("records_per_s", "records/s"), ("mb_per_s", "MB/s"),
        ("batch_us_p50", "batch p50 µs"), ("batch_us_p99", "batch p99 µs"),
    ]))
    return 0


def _summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case: the median run by records/s."""
    rows = []
    keyed: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        keyed.setdefault((r["layer"], r["durability"], r["batch"]), []).append(r)
    for runs in keyed.values():
        runs = sorted(runs, key=lambda r: r["records_per_s"])
        mid = runs[len(runs) // 2]
        rows.append({k: mid[k] for k in ("layer", "durability", "batch", "records", "seconds", "records_per_s",
                                         "mb_per_s", "batch_us_p50", "batch_us_p99")} | {"runs": len(runs)})
    return rows


# -- child: one case -----------------------------------------------------------
def _one(args: argparse.Namespace) -> int:
    import msgspec

    from recorder.schema.config import load_config
    from recorder.store import Store
    from recorder.testing import sample_message
    from recorder.protocol import Record
    from recorder.storage.writer import Entry

    layer, durability, batch = args.layer[0], args.durability[0], args.batch[0]
    if batch < 1:
        raise SystemExit("--batch must be >= 1")
    parent = Path(args.dir) if args.dir else default_data_parent()
    root = tempfile.mkdtemp(prefix=f"append-{layer}-{durability}-{batch}-", dir=parent)
    config = load_config()
    config.types[SCHEMA_TYPE] = msgspec.structs.replace(config.types[SCHEMA_TYPE], durability=durability)
    store = Store(config, data_root=root)
    try:
        writer = store.writers[SCHEMA_TYPE]
        raws = [msgspec.json.encode(sample_message(i=i)) for i in range(POOL)]
        accepted = [store.check(Record("bench", 0, SCHEMA_TYPE, raw)) for raw in raws] if layer == "storage" else []
        pool = itertools.cycle(accepted if layer == "storage" else raws)
        seq, check, write = store.seq, store.check, writer.write
        time_ns = time.time_ns
        pseq = 0

        def one_batch() -> None:
            nonlocal pseq
            first = seq.take(batch)
            entries = []
            for k in range(batch):
                pseq += 1
                item = next(pool)
                acc = item if layer == "storage" else check(Record("bench", pseq, SCHEMA_TYPE, item))
                entries.append(Entry(acc, first + k, time_ns(), "bench", pseq))
            write(entries)

        # Warm-up: creates the file (header, directory fsyncs) and settles caches.
        t_end = time.perf_counter() + args.warmup
        one_batch()
        while time.perf_counter() < t_end:
            one_batch()
        journal = next(iter(writer.open.values()))
        size0 = journal.size

        durations: list[float] = []
        n = 0
        clock = time.perf_counter
        t0 = clock()
        deadline = t0 + args.seconds
        while True:
            b0 = clock()
            one_batch()
            b1 = clock()
            durations.append(b1 - b0)
            n += batch
            if b1 >= deadline or (args.records and n >= args.records):
                break
        elapsed = clock() - t0
        nbytes = journal.size - size0
    finally:
        store.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    durations.sort()
    q = statistics.quantiles(durations, n=100, method="inclusive") if len(durations) > 1 else durations * 99
    result = {
        "benchmark": CASE,
        "layer": layer,
        "durability": durability,
        "fsync": durability == "fsync",
        "batch": batch,
        "records": n,
        "batches": len(durations),
        "seconds": round(elapsed, 4),
        "records_per_s": round(n / elapsed, 1),
        "bytes_per_record": round(nbytes / n, 1),
        "mb_per_s": round(nbytes / elapsed / 1e6, 2),
        "record_json_bytes": round(sum(map(len, raws)) / len(raws), 1),
        "batch_us_p50": round(q[49] * 1e6, 1),
        "batch_us_p99": round(q[98] * 1e6, 1),
        "batch_us_max": round(durations[-1] * 1e6, 1),
        "data_root": root,
        "machine": machine_info(parent),
    }
    print(msgspec.json.encode(result).decode())
    return 0
