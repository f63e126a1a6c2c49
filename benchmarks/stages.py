"""CPU per record of in-process ``Store.record``, by stage: the reference path beside the fast path.

Both paths run in one fresh subprocess over the same records (``recorder.testing.sample_message``,
~0.95 KB of JSON, or ``--type raw_action``), so their ratio holds on a noisy machine. Each stage is
timed alone in a loop over the records (CPU time, best of ``--repeat``):

- ``bytes``: the byte checks (reference: denied names, escapes, nesting and line-break scans;
  fast: ASCII, one regex, one prefix scan, bracket count);
- ``decode``: msgspec to a dict (reference) or straight to the derived Struct (fast);
- ``validation``: the rest of the accept step: pydantic, ids, metadata, identifiers (reference),
  or the post-decode checks and ids (fast): the accept step's total less the stages above;
- ``envelope``: the envelope (0.1.1: a dict through ``safe_json``; now: cached parts, one join);
- ``chain``: hash and line (0.1.1: ``seal_line``; now: ``Journal.write``'s loop, less its write);
- ``write``: one ``write`` of the line to a file (page cache: ``durability = "os"``).

The totals are measured directly: ``Store.record`` with ``durability = "os"`` and the accept step
on its reference path only (``reference``) or with its fast path (``fast``).

    python -m benchmarks stages                  # ~20 s
    python -m benchmarks stages --type raw_action --records 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import default_data_parent, machine_info, markdown_table, progress, run_case, write_results

CASE = "stages"
STAGES = ("bytes", "decode", "validation", "envelope", "chain", "write")


def add_parser(subparsers: Any) -> None:
    """Add the ``stages`` subcommand."""
    p = subparsers.add_parser(CASE, help="Store.record CPU per record by stage, reference path beside fast path",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--type", default="a3cp_message", choices=["a3cp_message", "raw_action", "audit_event"])
    p.add_argument("--records", type=int, default=20000, help="records per timed loop (default 20000)")
    p.add_argument("--repeat", type=int, default=5, help="timed loops per stage; the best counts (default 5)")
    p.add_argument("--dir", help="parent of the temporary data roots (default: benchmarks/results/tmp)")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/stages-<time>.json)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG bar chart")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point: measure in a fresh subprocess, then print the table (and draw the plot)."""
    if args.one:
        return _one(args)
    parent = Path(args.dir) if args.dir else default_data_parent()
    progress(f"stages: {args.type}, {args.records:,} records per loop, best of {args.repeat}, in a subprocess")
    r = run_case(CASE, ["--type", args.type, "--records", str(args.records), "--repeat", str(args.repeat),
                        "--dir", str(parent)], timeout=600.0)
    rows = [{"stage": s, "reference_us": r["reference"][s], "fast_us": r["fast"][s],
             "ratio": _ratio(r["reference"][s], r["fast"][s])} for s in (*STAGES, "accept step", "Store.record")]
    payload: dict[str, Any] = {"benchmark": CASE, "command": " ".join(["python", "-m", "benchmarks", *sys.argv[1:]]),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(parent),
               "summary": rows, "result": r}
    path = write_results(CASE, payload, args.out)
    m = payload["machine"]
    print(f"Store.record CPU per record by stage, {args.type} ({r['record_bytes']:.0f} B), durability os: "
          f"{m['cpu_count']} CPU, Python {m['python']}, load average {r['loadavg'][0]:.2f} at start, "
          f"{r['loadavg_end'][0]:.2f} at end; recorder {m['libraries']['recorder']} ({m['git']})")
    print()
    print(markdown_table(rows, [("stage", "stage"), ("reference_us", "reference µs"), ("fast_us", "fast µs"),
                                ("ratio", "reference / fast")]))
    if not args.no_plot:
        _plot(rows, path.with_suffix(".png"), args.type, r["loadavg"][0])
    progress(f"results written to {path}")
    return 0


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else float("inf")


def _plot(rows: list[dict[str, Any]], out: Path, stype: str, load: float) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is not installed: no plot drawn (pip install matplotlib, or the 'bench' extra)")
        return
    stages = [r for r in rows if r["stage"] in STAGES]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    left = {"reference": 0.0, "fast": 0.0}
    for r in stages:
        for y, key in ((1, "reference"), (0, "fast")):
            v = r[f"{key}_us"]
            ax.barh(y, v, left=left[key], label=r["stage"] if key == "reference" else None,
                    color=f"C{STAGES.index(r['stage'])}")
            left[key] += v
    totals = {r["stage"]: r for r in rows}["Store.record"]
    ax.set_yticks([0, 1], [f"fast\n{totals['fast_us']:.1f} µs", f"reference\n{totals['reference_us']:.1f} µs"])
    ax.set_xlabel("CPU µs per record (stages timed alone; label: Store.record measured whole)")
    ax.set_title(f"Store.record by stage, {stype}, load {load:.1f}")
    ax.legend(ncol=3, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    progress(f"plot written to {out}")


# -- child: the measurements -----------------------------------------------------
def _measure(n: int, repeat: int, loops: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best CPU µs per record of each loop (each handles ``n`` records), the loops interleaved
    round by round so that every one sees the same machine."""
    best = {k: float("inf") for k in loops}
    for _ in range(repeat):
        for k, loop in loops.items():
            t0 = time.process_time()
            loop()
            best[k] = min(best[k], time.process_time() - t0)
    return {k: round(v / n * 1e6, 3) for k, v in best.items()}


def _each(fn: Callable[[Any], object], items: list[Any]) -> int:
    """``fn`` over ``items``, keeping no result (a list of results would time the garbage collector too)."""
    for item in items:
        fn(item)
    return len(items)


def _one(args: argparse.Namespace) -> int:
    import hashlib
    from dataclasses import dataclass

    import msgspec

    from recorder.storage import _durable
    from recorder._env import iso_ns
    from recorder.schema.config import load_config
    from recorder.storage.journal import Journal, seal_line
    from recorder.protocol import Record
    from recorder.schema.accept import Acceptor
    from recorder.store import Store
    from recorder.testing import sample_audit, sample_message, sample_raw_action
    from recorder.schema.validation import _deep, _mentions_denied, _stored, safe_json
    from recorder.storage.writer import Entry, body

    makers: dict[str, Callable[..., dict[str, Any]]] = {
        "a3cp_message": sample_message, "raw_action": sample_raw_action, "audit_event": sample_audit}
    make = makers[args.type]
    raws = [msgspec.json.encode(make(i=i)) for i in range(args.records)]
    frames = [Record("bench", i + 1, args.type, raw) for i, raw in enumerate(raws)]
    n, rep = len(raws), args.repeat
    loadavg = os.getloadavg()
    config = load_config()
    for name, tc in config.types.items():  # page cache only, and no sealing inside the timed loops
        config.types[name] = msgspec.structs.replace(tc, durability="os", rotate_records=0, rotate_bytes=0,
                                                     rotate_age_s=0, session_idle_s=0)
    parent = Path(args.dir) if args.dir else default_data_parent()
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        store = Store(config, data_root=Path(tmp) / "data")
        spec = store.registry.get(args.type)
        fast = store.acceptors[args.type]
        ref = Acceptor(spec, config.recorder.max_depth, config.recorder.session_end_event, fast=False)
        derived = fast._last
        assert derived is not None, f"{args.type} has no fast path"
        objs = [msgspec.json.decode(r) for r in raws]
        accepted = [fast(f) for f in frames]
        verdicts = [fast._fast_verdict(f.record, f) for f in frames]
        assert fast.counts["disagreements"] == 0 and all(v is not None for v in verdicts)
        entries = [Entry(a, i, time.time_ns(), "bench", i) for i, a in enumerate(accepted)]
        bodies = [body(e) for e in entries]

        @dataclass(slots=True)
        class Old:  # 0.1.1's Accepted
            spec: Any
            fields: dict[str, Any]
            record: bytes
            path_values: dict[str, str]

        def ref_bytes() -> None:  # 0.1.1's passes: denied names and prefixes, escapes, depth, line breaks
            for raw, obj in zip(raws, objs):
                _mentions_denied(spec, raw)
                _deep(raw, 32)
                _stored(raw, obj)

        def ref_envelope() -> None:  # 0.1.1: a fields dict per record, then the envelope through safe_json
            for i, v in enumerate(verdicts):
                assert v is not None
                fields = {"schema_type": args.type, "schema_version": v.version, "record_id": v.record_id,
                          "timestamp": v.timestamp, "user_id": v.user_id, "session_id": v.session_id,
                          "source": v.source, "action_id": None, "tags": None}
                a = Old(spec, fields, v.stored, {"schema_type": args.type, "user_id": v.user_id,
                                                  "session_id": v.session_id or "none"})
                head = {"seq": i, "received": iso_ns(time.time_ns()), **a.fields, "producer": "bench", "pseq": i}
                b"".join((safe_json(head)[:-1], b',"record":', a.record))

        class OldJournal:  # 0.1.1's Journal.write and sync, without the write
            head, size, records = "0" * 64, 0, 0
            pending: tuple[str, int, int] | None = None

            def write(self, batch: list[bytes]) -> None:
                parts: list[bytes] = []
                head, last = self.head, len(batch) - 1
                for i, b in enumerate(batch):
                    line, head = seal_line(b, head, True, commit=i == last)
                    parts.append(line)
                data = b"".join(parts)
                self.pending = (head, len(data), len(batch))

            def sync(self) -> None:
                assert self.pending is not None
                self.head, n, lines = self.pending
                self.pending = None
                self.size += n
                self.records += lines

        old = OldJournal()

        def ref_chain() -> None:
            for b in bodies:
                old.write([b])
                old.sync()

        line = bodies[0] + b"x" * 110
        fd = os.open(os.path.join(tmp, "write.bin"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        dfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        j = Journal(dfd, "chain.jsonl", "chain.jsonl", hashing=True, fsync=False)
        j.open({"schema_type": "bench", "hash": "sha256"})
        real_append = _durable.append

        def new_chain() -> None:  # today's Journal.write and sync, batch 1, without the write
            _durable.append = lambda fd, data, label: None  # the chain alone
            try:
                for b in bodies:
                    j.write([b])
                    j.sync()
            finally:
                _durable.append = real_append

        loops: dict[str, Callable[[], object]] = {
            "reference bytes": ref_bytes,
            "reference decode": lambda: _each(msgspec.json.decode, raws),
            "reference accept step": lambda: _each(ref, frames),
            "reference envelope": ref_envelope,
            "reference chain": ref_chain,
            "fast bytes": lambda: _each(fast._clean, raws),
            "fast decode": lambda: _each(derived.decoder.decode, raws),
            "fast verdict": lambda: _each(lambda f: fast._fast_verdict(f.record, f), frames),
            "fast accept step": lambda: _each(fast, frames),
            "fast envelope": lambda: (_each(lambda vf: fast._accepted(*vf), list(zip(verdicts, frames))),
                                      _each(body, entries)),
            "fast chain": new_chain,
            "write": lambda: _each(lambda _: os.write(fd, line), bodies),
            "sha256": lambda: _each(lambda b: hashlib.sha256(b).hexdigest(), bodies),
        }
        t = _measure(n, rep, loops)
        os.close(fd)
        j.close()
        os.close(dfd)

        # the totals: Store.record whole, batch 1, reference-only acceptors vs fast ones, interleaved
        fast_acceptors = dict(store.acceptors)
        slow_acceptors = {name: Acceptor(a.spec, config.recorder.max_depth, config.recorder.session_end_event,
                                         fast=False) for name, a in fast_acceptors.items()}

        def record_with(acceptors: dict[str, Acceptor]) -> Callable[[], object]:
            def loop() -> None:
                store.acceptors.update(acceptors)
                for r in raws:
                    store.record(r, schema_type=args.type)
            return loop

        t.update(_measure(n, rep, {"reference Store.record": record_with(slow_acceptors),
                                   "fast Store.record": record_with(fast_acceptors)}))
        store.close()
    out: dict[str, dict[str, float]] = {"reference": {}, "fast": {}}
    for path in ("reference", "fast"):
        for stage in ("bytes", "decode", "accept step", "envelope", "chain", "Store.record"):
            out[path][stage] = t[f"{path} {stage}"]
        out[path]["write"] = t["write"]
    out["reference"]["validation"] = round(max(0.0, t["reference accept step"] - t["reference bytes"]
                                               - t["reference decode"]), 3)
    out["fast"]["validation"] = round(max(0.0, t["fast verdict"] - t["fast decode"]), 3)
    result = {"benchmark": CASE, "type": args.type, "records": n, "repeat": rep,
              "record_bytes": sum(map(len, raws)) / n, "loadavg": loadavg, "loadavg_end": os.getloadavg(),
              "sha256_us": t["sha256"], **out}
    print(msgspec.json.encode(result).decode())
    return 0
