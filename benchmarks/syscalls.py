"""Crash at every syscall: kill (or fail) the recorder at the Nth data-root syscall of one thread, then check.

``python -m benchmarks syscalls`` writes a config into a temporary directory
(``a3cp_message`` JSONL segments of 5 records, ``raw_action`` Parquet
segments of 3, ``min_free_bytes = 0``) and runs a small workload against
``python -m recorder.router``: 12 ``a3cp_message`` and 7 ``raw_action``
records, each sent alone and waited for, so it opens, rotates, seals,
converts to Parquet and deletes journals.

**Reference run.** Once READY, the recorder's threads are traced
(``strace -f -ff -y -p PID``) while the workload runs; every ``write``,
``fdatasync``, ``fsync``, ``rename*``, ``openat``, ``unlink*`` and
``ftruncate`` whose file or directory lies under the data root is counted per
thread role (sealer, ``writer:<type>``, main) and its paths are kept.

**Fault cases.** For a fault (role, syscall group, N, action) a fresh data
root gets a fresh recorder; once READY, ``strace -p TID`` attaches to the
thread of that role only, with ``-e inject=SYSCALLS:signal=KILL:when=N``
(or ``error=EIO``/``error=ENOSPC``, ``when=N`` once or ``when=N+`` from N
on) and one ``-P`` per path the reference run saw under the data root.
Three facts of strace shape this:

- ``-P`` matches a path exactly, not a directory prefix, so ``-P <root>``
  alone would only match syscalls on the root directory itself: every
  directory and file the reference run touched is listed (temp names carry
  the recorder's pid, replaced by the new one);
- ``when=N`` counts per traced thread, so attaching to all threads would
  kill at whichever thread reaches its Nth call first; attaching to one
  thread makes N exact, and the sweep goes over every thread role;
- ``-e trace=none`` turns injection off (strace 6.1), so the injected
  syscalls are traced into a log, which also says where the fault landed.

Counting starts after READY (strace attaches then). ``signal=KILL`` kills
on syscall entry, so the Nth call never runs. ``ftruncate`` runs after
READY only when a batch is cut back, so its cases inject ``EIO`` into the
Nth ``fdatasync`` and kill at the cut-back's ``ftruncate``.

After the fault: every ``*.parquet`` under a final name must be readable
by pyarrow (checked before anything restarts). If the recorder still runs,
strace detaches (the fault clears) and two more records must be stored,
not refused. Then a new recorder starts without strace, the client resends
what was not acknowledged (``flush``), records refused during the fault are
sent again as new records, two more records go in, and the recorder stops
with SIGTERM. The checks: every record acknowledged as durable is on disk
exactly once and each producer's records are in order within each type; no
refused record is on disk; every logical record (``record_id``) is on disk
exactly once in the end; ``recorder.verify`` is clean; no temp file is left;
every Parquet file is readable; the audit log has exactly one
``segment_sealed`` event per segment with a manifest or catalog entry (with
the manifest's record count) and none for any other (``recorder.storage._trail``);
no segment holds more than its type's ``rotate_records``. When the fault hit a record batch itself
(``write``/``fdatasync`` of a data journal by its writer), the record in
flight must not have been acknowledged as durable.

    python -m benchmarks syscalls                       # the full sweep (every N): ~750 cases, 15-20 min
    python -m benchmarks syscalls --quick --seed S      # one sampled N per syscall group and error kind
    python -m benchmarks syscalls --actions kill --groups fdatasync rename

``--quick --seed S`` draws the same cases as tests/integration/test_syscall_crash.py
run with ``RECORDER_TEST_SEED=S``. A case whose N lies past what its thread
did in that run (the counts vary a little with timing) reports "not reached".

Results go to ``benchmarks/results/syscalls-<time>.json``; failing cases keep
their directory (data root, strace log, recorder stderr).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._common import default_data_parent, machine_info, progress, write_results
from ._syscalls_case import Launcher, RecorderProc, Start, reference, run_case
from ._syscalls_plan import ACTIONS, ERROR_KINDS, Fault, Reference, full_plan, sample_error, sample_kill, sample_plan
from ._syscalls_strace import GROUPS, ROLES, strace_problem

__all__ = ["ERROR_KINDS", "GROUPS", "ROLES", "Fault", "Launcher", "RecorderProc", "Reference", "Start", "add_parser",
           "reference", "run", "run_case", "sample_error", "sample_kill", "sample_plan", "strace_problem", "sweep"]

CASE = "syscalls"


# -- the command ----------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    """Add the ``syscalls`` subcommand."""
    p = subparsers.add_parser(CASE, help="kill or fail the recorder at every data-root syscall (strace); check",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one sampled N per syscall group and error kind")
    p.add_argument("--per-kind", type=int, default=1, help="with --quick: sampled N per kind (default 1)")
    p.add_argument("--seed", type=int, help="seed of --quick's sample (default: from the clock; reported)")
    p.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS))
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    p.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--limit", type=int, default=0, help="run only the first N cases of the plan")
    p.add_argument("--dir", help="parent of the temporary directory (default: benchmarks/results/tmp)")
    p.add_argument("--keep", action="store_true", help="keep every case's directory, not only failing ones")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/syscalls-<time>.json)")
    p.set_defaults(func=run)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Reference run, plan, every case; the results."""
    problem = strace_problem()
    if problem:
        raise SystemExit(problem)
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="syscalls-", dir=parent)).resolve()
    t0 = time.monotonic()
    launcher = Launcher()
    try:
        progress("reference run (every thread traced)")
        ref = reference(launcher.start, work / "reference")
        launcher.close()
        progress(f"reference: {ref.total()} data-root syscalls after READY: "
                 + "; ".join(f"{r} " + ", ".join(f"{g} {n}" for g, n in c.items() if n)
                             for r, c in ref.counts.items() if any(c.values())))
        plan = sample_plan(ref, seed, args.per_kind) if args.quick else full_plan(ref)
        plan = [f for f in plan if f.kind in args.actions and (f.then_kill or f.group) in args.groups
                and f.role in args.roles]
        if args.limit:
            plan = plan[: args.limit]
        progress(f"{len(plan)} fault cases, {args.jobs} at a time")
        results: list[dict[str, Any]] = []
        lock = threading.Lock()

        def one(k: int, fault: Fault) -> dict[str, Any]:
            case_dir = work / f"case-{k:04d}"
            own = Launcher()
            try:
                r = run_case(fault, ref, case_dir, own.start)
            except Exception as e:  # noqa: BLE001 - a case that breaks is a failed case, the sweep goes on
                r = {"fault": fault.name, **asdict(fault), "violations": [f"{type(e).__name__}: {e}"]}
            finally:
                own.close()
            r["dir"] = str(case_dir)
            if not r["violations"] and not args.keep:
                shutil.rmtree(case_dir, ignore_errors=True)
            with lock:
                results.append(r)
                mark = "ok" if not r["violations"] else "FAILED"
                progress(f"[{len(results)}/{len(plan)}] {fault.name}: {mark}"
                         f"{'' if r.get('fired', True) else ' (not reached)'} {r.get('hit', [''])[:1]}")
            return r

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda kf: one(*kf), enumerate(plan)))
    finally:
        launcher.close()
    results.sort(key=lambda r: r["fault"])
    failed = [r for r in results if r["violations"]]
    if not failed and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    by_kind: Counter[str] = Counter()
    for r in results:
        kind = "kill" if r["action"] == "kill" or r.get("then_kill") else r["action"]
        by_kind[kind + ("" if r.get("fired") else " (not reached)")] += 1
    return {
        "case": CASE, "machine": machine_info(work), "seed": seed, "quick": bool(args.quick),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "work_dir": str(work), "reference": asdict(ref),
        "cases": len(results), "fired": sum(bool(r.get("fired")) for r in results),
        "by_kind": dict(by_kind), "failed": len(failed),
        "violations": [f"{r['fault']}: {v}" for r in failed for v in r["violations"]],
        "results": results, "wall_s": round(time.monotonic() - t0, 1),
    }


def summary(r: dict[str, Any]) -> str:
    """The human-readable summary of one sweep."""
    lines = [
        f"command        {r['command']}  (seed {r['seed']})",
        f"reference      {sum(sum(c.values()) for c in r['reference']['counts'].values())} data-root syscalls "
        f"after READY",
        f"fault cases    {r['cases']} ({r['fired']} reached their syscall): "
        + ", ".join(f"{k} {n}" for k, n in sorted(r["by_kind"].items())),
        f"failed         {r['failed']}",
        f"wall time      {r['wall_s']:.0f} s",
    ]
    lines += [f"VIOLATION  {v.splitlines()[0]}" for v in r["violations"][:40]]
    lines.append("result         " + ("OK" if not r["failed"] else "FAILED"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m benchmarks syscalls``: 0 when every case passed."""
    result = sweep(args)
    path = write_results(CASE, result, args.out)
    print(summary(result))
    print(f"results: {path}")
    if result["failed"]:
        print(f"kept: {result['work_dir']} (failing cases' data roots, strace logs, recorder stderr)")
    return 1 if result["failed"] else 0
