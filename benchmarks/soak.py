"""Crash soak: SIGKILL a supervised recorder at N random instants under load, then check what is on disk.

``python -m benchmarks soak --kills N`` writes a config that rotates
segments often and seals Parquet (``a3cp_message`` JSONL segments of
``--rotate-message`` records, ``raw_action`` Parquet segments of
``--rotate-action`` records, ``min_free_bytes = 0``, a restart limit the
soak cannot reach) into a temporary directory, starts ``python -m recorder
run`` on a fresh data root there, and starts ``--producers`` producer
processes (``python -m benchmarks.soak --producer``). Each sends paced
traffic through one ``recorder.Client``: ``a3cp_message`` records, every
4th a ``raw_action``, an ``audit_event`` now and then, a session end (which
seals the session's segments) and a new session every ``--session-records``
records, and now and then an invalid record the recorder must reject.

The orchestrator SIGKILLs the recorder process (never the supervisor) a
uniformly random delay (seeded: ``--seed``, reported) after each READY line,
then waits for the supervisor's next READY line: restart-to-accepting time
is from the kill to that line. Producers resend by themselves. After the
last kill the producers get a stop file, flush, and write their history
(per record: ``pseq``, ``record_id``, schema type, whether it was meant to
be rejected, and its final state: ``acked`` durable, ``rejected``, or
``unknown``) as JSON; then the supervisor is stopped with SIGTERM and
:func:`check` checks the data root:

- every acknowledged record is on disk exactly once (same producer and
  ``pseq``, same ``record_id``); no rejected record is on disk; no record
  meant to be rejected was acknowledged as durable;
- ``recorder.read`` yields each producer's records in ``pseq`` order, within
  each schema type and across types (docs/FORMAT.md, "Ordering");
- ``recorder.verify`` over the root (chains, manifests, Parquet digests,
  catalog, leftover temp files) finds no problem; no ``.*.tmp-*`` file is
  left;
- no segment holds more than its type's ``rotate_records``, or more bytes
  than its ``rotate_bytes`` unless it holds a single record (the summary
  gives each type's largest segment beside its limits);
- the audit log has exactly one ``segment_sealed`` event per segment with a
  manifest, tombstone or catalog entry, with the manifest's record count,
  and none for any other segment (``recorder.storage._trail.check_trail``);
- the recorder died only when killed (every exit the supervisor reports is
  ``-9``), every kill was followed by a READY with a new pid, and no
  producer was left with unacknowledged records.

It prints a summary, writes ``benchmarks/results/soak-<time>.json`` and
exits 1 on any violation (the data root and histories are then kept).

The supervisor's backoff is not configurable: it grows from 0.1 s to 5 s
over crashes less than 30 s apart, so most restarts wait 5 s. The summary
gives restart-to-accepting time and, beside it, that time minus the backoff
the supervisor announced (the recorder's own start-up).

    python -m benchmarks soak --kills 200              # the full soak: ~27 min + ~2 min checking
    python -m benchmarks soak --kills 5 --producers 4  # a short one

Each restarted recorder imports ``recorder/`` afresh; to soak one fixed
commit while the tree changes, run it from an export:
``git archive HEAD | tar -x -C DIR && cd DIR && python -m benchmarks soak ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from ._common import (
    PACKAGE_DIR,
    ReadyChild,
    child_env,
    default_data_parent,
    machine_info,
    progress,
    wait_or_kill,
    write_results,
)
from ._soak_check import Report, check, load_histories, temp_files
from ._soak_producer import ACKED, REJECTED, UNKNOWN, produce, producer_main

__all__ = ["ACKED", "REJECTED", "UNKNOWN", "Report", "add_parser", "check", "config_text", "kill_delays",
           "load_histories", "produce", "run", "soak", "spacing_for", "summary", "temp_files"]

CASE = "soak"
_RESTART_LINE = re.compile(r"recorder pid (\d+) exited with (-?\d+); restart #(\d+) in ([0-9.]+) s")


_CONFIG = """\
# Written by benchmarks/soak.py: segments rotate often and raw_action is sealed into Parquet.
[recorder]
min_free_bytes = 0
restart_limit = {restart_limit}
restart_window_s = 60.0

[defaults]
durability = "fsync"
hash = "sha256"

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/users/{{user_id}}/sessions/{{session_id}}/{{schema_type}}_{{segment:04d}}.jsonl"
rotate_records = {rotate_message}

[types.a3cp_message.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/users/{{user_id}}/sessions/{{session_id}}/{{schema_type}}_{{segment:04d}}.parquet"
max_record_bytes = 1048576
rotate_records = {rotate_action}

[types.audit_event]
model = "recorder.a3cp:AuditEvent"
path = "logs/users/{{user_id}}/sessions/{{session_id}}/{{schema_type}}.jsonl"
"""


def add_parser(subparsers: Any) -> None:
    """Add the ``soak`` subcommand."""
    p = subparsers.add_parser(CASE, help="SIGKILL a supervised recorder N times under load; check every ack",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, required=True, help="SIGKILLs of the recorder process")
    p.add_argument("--producers", type=int, default=8, help="producer processes (default 8)")
    p.add_argument("--seconds", type=float,
                   help="spread the kills over about this much recorder uptime (mean delay S/N); "
                        "default: delays uniform in [--min-interval, --max-interval]")
    p.add_argument("--min-interval", type=float, default=0.3, help="shortest delay from READY to kill (s)")
    p.add_argument("--max-interval", type=float, default=2.0, help="longest delay from READY to kill (s)")
    p.add_argument("--rate", type=float, default=50.0,
                   help="records/s per producer (default 50; the recorder must catch up within its short lives)")
    p.add_argument("--seed", type=int, help="seed of the kill delays (default: from the clock; reported)")
    p.add_argument("--config", help="registry TOML to use instead of the generated one "
                                    "(its restart_limit/restart_window_s then space the kills)")
    p.add_argument("--rotate-message", type=int, default=500, help="a3cp_message records per JSONL segment")
    p.add_argument("--rotate-action", type=int, default=100, help="raw_action records per Parquet segment")
    p.add_argument("--session-records", type=int, default=1500,
                   help="records per session before a producer ends it and starts another (0: never)")
    p.add_argument("--tail", type=float, default=1.0, help="seconds of traffic after the last restart")
    p.add_argument("--flush-timeout", type=float, default=180.0, help="producers' final flush timeout (s)")
    p.add_argument("--dir", help="parent of the temporary directory (default: benchmarks/results/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data root and histories even when all is well")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/soak-<time>.json)")
    p.set_defaults(func=run)


# -- the plan ---------------------------------------------------------------------------------
def kill_delays(n: int, seed: int, lo: float, hi: float) -> list[float]:
    """``n`` delays (READY to kill), uniform in [lo, hi], from ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [rng.uniform(lo, max(lo, hi)) for _ in range(n)]


def spacing_for(restart_limit: int, window: float) -> float:
    """Least kill-to-kill interval that keeps the supervisor's crash count in any window below its limit."""
    if restart_limit <= 1:
        raise SystemExit(f"restart_limit = {restart_limit}: the supervisor gives up after one crash")
    return 1.05 * window / (restart_limit - 1)


def config_text(kills: int, rotate_message: int, rotate_action: int) -> str:
    """The generated soak config (restart limit above the number of kills)."""
    return _CONFIG.format(restart_limit=kills + 10, rotate_message=rotate_message, rotate_action=rotate_action)


# -- the orchestrator ---------------------------------------------------------------------------
class _Supervisor(ReadyChild):
    """``python -m recorder run``: READY lines timestamped as they arrive, stderr to a file."""

    who = "the supervisor"

    def __init__(self, root: Path, config: Path, log: Path) -> None:
        super().__init__(["-m", "recorder", "run", "--data-root", str(root), "--config", str(config)], log, _env())

    def exits(self) -> list[tuple[int, int, int, float]]:
        """(recorder pid, exit status, restart number, backoff s) for every restart the supervisor announced."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [(int(m[1]), int(m[2]), int(m[3]), float(m[4])) for m in _RESTART_LINE.finditer(text)]


def _env() -> dict[str, str]:
    env = child_env()
    repo = str(PACKAGE_DIR.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _pcts(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)
    return {"p50": round(statistics.median(s), 3), "p90": round(s[min(len(s) - 1, int(len(s) * 0.9))], 3),
            "max": round(s[-1], 3), "mean": round(statistics.fmean(s), 3)}


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak and the checks; return the results (``violations`` empty when all is well)."""
    from recorder.schema.endpoints import endpoints
    from recorder.schema.config import load_config

    if args.kills < 0 or args.producers < 1:
        raise SystemExit("--kills must be >= 0 and --producers >= 1")
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=parent)).resolve()
    root = work / "data"
    if args.config:
        config = Path(args.config).resolve()
    else:
        config = work / "soak.toml"
        config.write_text(config_text(args.kills, args.rotate_message, args.rotate_action), encoding="utf-8")
    cfg = load_config(config)
    settings = cfg.recorder
    spacing = 0.0
    if settings.restart_limit <= args.kills:
        spacing = spacing_for(settings.restart_limit, settings.restart_window_s)
    lo, hi = args.min_interval, args.max_interval
    if args.seconds:
        hi = max(lo, 2 * args.seconds / max(1, args.kills) - lo)
    delays = kill_delays(args.kills, seed, lo, hi)
    progress(f"soak: {args.kills} kills (delays uniform in [{lo:g}, {hi:g}] s after READY, seed {seed}"
             + (f", at least {spacing:.2f} s between kills" if spacing else "")
             + f"), {args.producers} producers at {args.rate:g} records/s, in {work}")

    git_at_start = machine_info()["git"]  # recorder/ may change under a long run: restarts import it afresh
    violations: list[str] = []
    kills: list[dict[str, Any]] = []
    t_start = time.monotonic()
    sup = _Supervisor(root, config, work / "supervisor.log")
    producers: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    stop_file = work / "stop"
    histories = [work / f"history-{i:02d}.json" for i in range(args.producers)]
    sup_rc: int | None = None
    try:
        t_ready, ready = sup.next_ready(60)
        for i in range(args.producers):
            log: IO[bytes] = open(work / f"producer-{i:02d}.log", "wb")
            logs.append(log)
            producers.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.soak", "--producer", "--index", str(i), "--data-root", str(root),
                 "--config", str(config), "--rate", repr(args.rate), "--session-records", str(args.session_records),
                 "--stop-file", str(stop_file), "--history", str(histories[i]),
                 "--flush-timeout", repr(args.flush_timeout)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=PACKAGE_DIR.parent, env=_env()))
        last_kill = -1e9
        for n, delay in enumerate(delays, 1):
            at = max(t_ready + delay, last_kill + spacing)
            while time.monotonic() < at:
                _watch(sup, producers)
                if not sup.ready.empty():  # a restart nobody caused: the recorder died by itself
                    old = ready["pid"]
                    t_ready, ready = sup.ready.get()
                    violations.append(f"restart: recorder pid {old} was replaced by {ready['pid']} without a kill")
                    at = max(t_ready + delay, last_kill + spacing)
                time.sleep(min(0.02, max(0.0, at - time.monotonic())))  # the kill schedule, not a condition
            _watch(sup, producers)
            pid = ready["pid"]
            last_kill = time.monotonic()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                violations.append(f"restart: recorder pid {pid} was gone before kill #{n}")
                continue
            t_ready, ready = sup.next_ready(120)
            if ready["pid"] == pid:
                violations.append(f"restart: kill #{n}: the READY after the kill names the killed pid {pid}")
            kills.append({"n": n, "pid": pid, "delay_s": round(delay, 4),
                          "at_s": round(last_kill - t_start, 3), "restart_s": round(t_ready - last_kill, 4),
                          "new_pid": ready["pid"]})
            if n % 10 == 0 or n == len(delays):
                progress(f"  kill {n}/{len(delays)}: pid {pid} -> {ready['pid']} in {t_ready - last_kill:.2f} s")
        deadline = time.monotonic() + args.tail
        while time.monotonic() < deadline:
            _watch(sup, producers)
            time.sleep(0.02)  # traffic after the last restart, by the clock
        stop_file.touch()
        for i, p in enumerate(producers):
            wait_or_kill(p, args.flush_timeout + 60)
            rc = p.returncode
            if rc != 0 or not histories[i].exists():
                violations.append(f"producer: producer {i} exited with {rc} (see {work}/producer-{i:02d}.log)")
        if not sup.ready.empty():
            violations.append(f"restart: {sup.ready.qsize()} READY lines nobody caused (the recorder died by itself)")
    except RuntimeError as e:  # the supervisor gave up or a producer died: still check what is on disk
        violations.append(f"aborted: after {len(kills)} kills: {e}")
        progress(f"soak: ABORTED: {e}")
    finally:
        stop_file.touch()
        for p in producers:  # after an abort: stop sending, flush briefly, write the history
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in producers:
            wait_or_kill(p, 30)
        for log in logs:
            log.close()
        sup_rc = sup.stop()
        shutil.rmtree(endpoints(cfg, str(root)).run_dir, ignore_errors=True)  # its ipc sockets and lock
    wall = time.monotonic() - t_start
    if sup_rc != 0:
        violations.append(f"supervisor: exited with {sup_rc} on SIGTERM (see {sup.log_path})")
    exits = sup.exits()
    unexpected = [e for e in exits if e[1] != -signal.SIGKILL]
    for pid, rc, num, _ in unexpected:
        violations.append(f"restart: recorder pid {pid} exited with {rc} (restart #{num}), not by our SIGKILL")
    if len(exits) != len(kills):
        violations.append(f"restart: the supervisor announced {len(exits)} restarts for {len(kills)} kills")
    backoff = {pid: b for pid, _rc, _n, b in exits}
    for k in kills:
        k["backoff_s"] = backoff.get(k["pid"])
    progress(f"soak: {len(kills)} kills in {wall:.0f} s; checking {root} ...")
    t_check = time.monotonic()
    found = [h for h in histories if h.exists()]
    hist = load_histories(found)
    from recorder.schema.registry import Registry

    specs = Registry.from_config(cfg).specs
    rep = check(root, hist, limits={t: (s.config.rotate_records, s.config.rotate_bytes) for t, s in specs.items()})
    violations += rep.violations
    restart = [k["restart_s"] for k in kills]
    startup = [k["restart_s"] - k["backoff_s"] for k in kills if k["backoff_s"] is not None]
    t = rep.totals
    result = {
        "benchmark": CASE,
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "settings": {"kills": args.kills, "producers": args.producers, "rate_per_producer": args.rate,
                     "delay_range_s": [lo, hi], "min_kill_spacing_s": spacing, "config": str(config),
                     "rotate_message": args.rotate_message, "rotate_action": args.rotate_action,
                     "session_records": args.session_records, "restart_limit": settings.restart_limit},
        "machine": machine_info(work),
        "git_at_start": git_at_start,
        "wall_s": round(wall, 1),
        "check_s": round(time.monotonic() - t_check, 1),
        "kills_survived": sum(1 for k in kills if k["new_pid"] != k["pid"]),
        "records": {"sent": t.get("sent", 0), "acked": t.get(ACKED, 0), "rejected": t.get(REJECTED, 0),
                    "unknown": t.get(UNKNOWN, 0), "stored": t.get("stored", 0),
                    "lost": t.get("lost", 0), "duplicates": t.get("duplicates", 0),
                    "unknown_on_disk": t.get("unknown_on_disk", 0),
                    "cross_type_inversions": t.get("cross_type_inversions", 0)},
        "restart_to_accepting_s": _pcts(restart),
        "startup_s": _pcts(startup),
        "resent": sum(h["counters"].get("resent", 0) for h in hist),
        "producers": [{k: h.get(k) for k in ("index", "producer", "sent", "acked", "max_pending", "flush_s",
                                             "seconds", "error", "counters")} for h in hist],
        "checks": t,
        "segments": rep.segments,
        "audit_trail": rep.trail,
        "violations": violations,
        "examples": rep.examples,
        "kills": kills,
        "work_dir": str(work),
    }
    return result


def _watch(sup: _Supervisor, producers: list[subprocess.Popen[bytes]]) -> None:
    """Fail fast when the supervisor or a producer died under us."""
    if sup.popen.poll() is not None:
        raise RuntimeError(f"the supervisor exited with {sup.popen.returncode}; see {sup.log_path}")
    for i, p in enumerate(producers):
        if p.poll() is not None:
            raise RuntimeError(f"producer {i} exited early with {p.returncode}")


def summary(r: dict[str, Any]) -> str:
    """The human-readable summary of one soak's results."""
    rec, ra, st = r["records"], r["restart_to_accepting_s"], r["startup_s"]
    lines = [
        f"command                {r['command']}  (seed {r['seed']})",
        f"recorder at            {r['git_at_start']}"
        + (f" -> {r['machine']['git']} (changed during the run)" if r['machine']['git'] != r['git_at_start'] else ""),
        f"kills survived         {r['kills_survived']} of {r['settings']['kills']}",
        f"records sent           {rec['sent']}  (resent after restarts: {r['resent']}; most unacknowledged "
        f"at once in a producer: {max((p['max_pending'] or 0 for p in r['producers']), default=0)})",
        f"acknowledged durable   {rec['acked']}",
        f"rejected (meant to be) {rec['rejected']}",
        f"never acknowledged     {rec['unknown']}",
        f"stored on disk         {rec['stored']}",
        f"lost                   {rec['lost']}",
        f"duplicates             {rec['duplicates']}",
        f"order across types    {rec['cross_type_inversions']} inversions (per type: "
        f"{r['checks'].get('out_of_order', 0)})",
        f"verify                 {r['checks'].get('verified_files', 0)} journals, "
        f"{r['checks'].get('verify_problems', 0)} problems; temp files left {r['checks'].get('temp_files', 0)}",
    ]
    for stype, seg in sorted(r.get("segments", {}).items()):
        lines.append(f"segments {stype:<14}{seg['segments']}, largest {seg['largest_records']} records "
                     f"(rotate_records {seg['rotate_records'] or '-'}) / {seg['largest_bytes']} bytes "
                     f"(rotate_bytes {seg['rotate_bytes'] or '-'}); {seg['over_limit']} over a limit")
    if r.get("audit_trail"):
        lines.append(f"audit trail            {r['audit_trail']}")
    if ra:
        lines.append(f"restart-to-accepting   p50 {ra['p50']:.2f} s  max {ra['max']:.2f} s  (kill -> next READY)")
    if st:
        lines.append(f"  minus backoff        p50 {st['p50']:.2f} s  max {st['max']:.2f} s  (recorder start-up)")
    lines.append(f"wall time              {r['wall_s']:.0f} s (+ {r['check_s']:.0f} s checking)")
    for v in r["violations"]:
        lines.append(f"VIOLATION  {v}")
    for kind, ex in r["examples"].items():
        lines.append(f"  e.g. {kind}: {json.dumps(ex[:3])}")
    lines.append("result                 " + ("OK" if not r["violations"] else "FAILED"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m benchmarks soak``: 0 when every check passed."""
    result = soak(args)
    path = write_results(CASE, result, args.out)
    print(summary(result))
    print(f"results: {path}")
    if result["violations"] or args.keep:
        print(f"kept: {result['work_dir']} (data root, histories, supervisor and producer logs)")
    else:
        shutil.rmtree(result["work_dir"], ignore_errors=True)
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    if "--producer" in sys.argv[1:]:
        sys.exit(producer_main(sys.argv[1:]))
    sys.exit("run the soak as: python -m benchmarks soak --kills N")
