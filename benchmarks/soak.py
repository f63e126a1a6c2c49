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
- each producer's records are in ``pseq`` order within each schema type
  (across types a crash may reorder ``seq``: docs/FORMAT.md, "Ordering");
- ``recorder.verify`` over the root (chains, manifests, Parquet digests,
  catalog, leftover temp files) finds no problem; no ``.*.tmp-*`` file is
  left;
- no segment holds more than its type's ``rotate_records``, or more bytes
  than its ``rotate_bytes`` unless it holds a single record (the summary
  gives each type's largest segment beside its limits);
- the audit log has exactly one ``segment_sealed`` event per segment with a
  manifest, tombstone or catalog entry, with the manifest's record count,
  and none for any other segment (``recorder._trail.check_trail``);
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
import fnmatch
import json
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._common import PACKAGE_DIR, default_data_parent, machine_info, progress, write_results

CASE = "soak"
ACKED, REJECTED, UNKNOWN = "acked", "rejected", "unknown"
TEMP_PATTERN = ".*.tmp-*"  # an interrupted atomic write (_durable)
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


# -- one producer process -----------------------------------------------------------------------
def produce(a: argparse.Namespace) -> int:
    """Send paced mixed traffic until the stop file appears; flush; write the history JSON.

    SIGTERM (the orchestrator aborting) stops sending and cuts the flush short,
    so a history is written whatever happened.
    """
    from recorder.client import Client
    from recorder.exceptions import RecorderError, RecorderUnavailable, RejectedError
    from recorder.testing import sample_audit, sample_message, sample_raw_action

    aborting = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: aborting.set())
    user = f"user{a.index:02d}"
    session_no = 0
    session = f"soak{a.index:02d}s{session_no:04d}"
    # record() blocks at most SLICE s on a full buffer, so a stop or an abort is seen.
    slice_s = 2.0
    c = Client(config=a.config, data_root=a.data_root, user_id=user, timeout=slice_s)
    # (pseq, record_id, schema type, meant to be rejected)
    sent: list[tuple[int, str, str, bool]] = []
    pool = [sample_message(user, "x", i) for i in range(64)]  # content varies, ids are fresh per record
    actions = [sample_raw_action(user, "x", i) for i in range(16)]
    blocked_since: float | None = None

    def send(rec: dict[str, Any], stype: str, bad: bool = False) -> bool:
        nonlocal blocked_since
        rid = str(uuid.uuid4())
        rec = dict(rec, record_id=rid, session_id=session)
        while not aborting.is_set():
            try:
                pseq = c.record(rec, schema_type=stype)  # no pseq is taken when it raises
            except RecorderUnavailable:  # buffer full (max_pending): backpressure
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > a.flush_timeout:
                    raise
                continue
            blocked_since = None
            sent.append((pseq, rid, stype, bad))
            return True
        return False

    stop = Path(a.stop_file)
    t0 = time.monotonic()
    k = 0
    max_pending = 0
    error = None
    try:
        while (k % 32 or not stop.exists()) and not aborting.is_set():
            max_pending = max(max_pending, c.pending)
            if a.session_records and k and k % a.session_records == 0:
                send(sample_audit(user, session, "session_end", k), "audit_event")
                session_no += 1
                session = f"soak{a.index:02d}s{session_no:04d}"
                send(sample_audit(user, session, "session_start", k), "audit_event")
            if k % 4 == 3:
                send(actions[k % len(actions)], "raw_action")
            elif k % 97 == 50:
                send(sample_audit(user, session, "checkpoint", k), "audit_event")
            elif k % 211 == 105:  # classifier_output without "unknown": the recorder must refuse it
                good = pool[k % len(pool)]
                send(dict(good, classifier_output={"hungry": 0.9, "drink": 0.1}), "a3cp_message", bad=True)
            else:
                send(pool[k % len(pool)], "a3cp_message")
            k += 1
            delay = t0 + k / a.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a capture loop, not waiting on a condition
    except RecorderUnavailable as e:
        error = f"record() blocked on a full buffer for {a.flush_timeout:g} s: {e}"
    rejected: dict[int, str] = {}
    t_flush = time.monotonic()
    while True:
        try:
            c.flush(timeout=slice_s)
            break
        except RejectedError as e:  # raised once everything is acknowledged
            rejected = {r[0]: r[1] for r in e.rejections}
            break
        except RecorderError as e:
            if aborting.is_set() or time.monotonic() - t_flush > a.flush_timeout:
                error = error or f"flush: {type(e).__name__}: {e}"
                # flush() reports rejections only once all is acknowledged; take those received so far.
                rejected = {p: r[0] for p, r in c._rejections.items()}
                break
    flush_s = time.monotonic() - t_flush
    acked = c.acked
    if aborting.is_set():
        error = error or "aborted by the orchestrator"
    records = [[pseq, rid, stype, bad,
                REJECTED if pseq in rejected else ACKED if pseq <= acked else UNKNOWN, rejected.get(pseq)]
               for pseq, rid, stype, bad in sent]
    history = {"index": a.index, "producer": c.producer, "pid": os.getpid(), "sent": len(sent), "acked": acked,
               "error": error, "counters": dict(c.counters), "seconds": round(time.monotonic() - t0, 3),
               "max_pending": max_pending, "flush_s": round(flush_s, 3),
               "fields": ["pseq", "record_id", "schema_type", "meant_bad", "state", "reject_code"],
               "records": records}
    try:
        c.close(timeout=0.5)
    except RecorderError:
        pass
    tmp = Path(a.history + ".part")
    tmp.write_text(json.dumps(history), encoding="utf-8")
    tmp.rename(a.history)
    return 0


def _producer_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak --producer")
    ap.add_argument("--producer", action="store_true")
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--session-records", type=int, default=1500)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--history", required=True)
    ap.add_argument("--flush-timeout", type=float, default=180.0)
    return produce(ap.parse_args(argv))


# -- the checker ------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`check` found: totals, and one line per violation (empty when all is well)."""

    violations: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    #: schema type -> segments, largest (records, bytes), limits, segments over a limit
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    trail: str = ""  # the audit trail against manifests and catalog, in one line

    def fail(self, kind: str, message: str, example: Any = None) -> None:
        self.violations.append(f"{kind}: {message}")
        if example is not None:
            self.examples.setdefault(kind, []).append(example)


def load_histories(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The producers' history files."""
    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]


def temp_files(root: str | Path) -> list[str]:
    """Files left by an interrupted atomic write (``.NAME.tmp-PID``), relative to ``root``."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if fnmatch.fnmatch(p.name, TEMP_PATTERN))


def _first_copies(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for p in seqs:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def check(root: str | Path, histories: list[dict[str, Any]], limit: int = 20,
          limits: dict[str, tuple[int, int]] | None = None) -> Report:
    """Check a data root no recorder is writing against the producers' histories.

    Args:
        root: the data root.
        histories: what each producer sent and how each record ended (see :func:`produce`).
        limit: examples kept per kind of violation.
        limits: schema type -> (rotate_records, rotate_bytes) no segment may pass (0: none).

    Returns:
        A Report; ``violations`` is empty when every check passed.
    """
    from recorder import read, verify
    from recorder._trail import check_trail, segment_sizes

    rep = Report()
    # (producer, pseq) -> [(record_id, schema type, seq)]; (producer, type) -> pseqs in seq order
    disk: dict[tuple[str, int], list[tuple[str, str, int]]] = {}
    per_type: dict[tuple[str, str], list[int]] = {}
    per_producer: dict[str, list[int]] = {}
    stored = 0
    for e in read(root):
        stored += 1
        prod, pseq, stype = str(e.get("producer")), int(e.get("pseq") or 0), str(e.get("schema_type"))
        rid = str(e.get("record_id") or (e.get("record") or {}).get("record_id"))
        disk.setdefault((prod, pseq), []).append((rid, stype, int(e.get("seq") or 0)))
        per_type.setdefault((prod, stype), []).append(pseq)
        per_producer.setdefault(prod, []).append(pseq)
    known = {h["producer"] for h in histories}
    strangers = sorted({p for p, _ in disk} - known)
    if strangers:
        rep.fail("stranger", f"records of {len(strangers)} producers no history names are on disk", strangers[:limit])

    counts = Counter[str]()
    for h in histories:
        prod = h["producer"]
        if h.get("error"):
            rep.fail("liveness", f"producer {h['index']} ({prod}): {h['error']}")
        for pseq, rid, stype, bad, state, code in h["records"]:
            counts["sent"] += 1
            counts[state] += 1
            found = disk.get((prod, pseq), [])
            if len(found) > 1:
                counts["duplicates"] += len(found) - 1
                if len(rep.examples.get("duplicate", [])) < limit:
                    rep.examples.setdefault("duplicate", []).append(
                        {"producer": prod, "pseq": pseq, "state": state, "copies": found})
            if any(f[0] != rid or f[1] != stype for f in found):
                counts["mismatched"] += 1
                if counts["mismatched"] <= limit:
                    rep.fail("mismatch", f"{prod} #{pseq}: on disk as {found}, sent as {rid} {stype}")
            if state == ACKED:
                if bad:
                    counts["rejection_lost"] += 1
                    if counts["rejection_lost"] <= limit:
                        rep.examples.setdefault("rejection_lost", []).append({"producer": prod, "pseq": pseq})
                elif not found:
                    counts["lost"] += 1
                    if counts["lost"] <= limit:
                        rep.examples.setdefault("lost", []).append(
                            {"producer": prod, "pseq": pseq, "record_id": rid, "schema_type": stype})
                else:
                    counts["acked_on_disk"] += 1
            elif state == REJECTED:
                if found:
                    counts["rejected_on_disk"] += 1
                    rep.examples.setdefault("rejected_on_disk", []).append({"producer": prod, "pseq": pseq})
                if not bad:
                    counts["unexpected_rejections"] += 1
                    if counts["unexpected_rejections"] <= limit:
                        rep.examples.setdefault("unexpected_rejection", []).append(
                            {"producer": prod, "pseq": pseq, "code": code})
            elif found:
                counts["unknown_on_disk"] += 1
    if counts["duplicates"]:
        rep.fail("duplicate", f"{counts['duplicates']} extra copies of records on disk")
    if counts["lost"]:
        rep.fail("lost", f"{counts['lost']} acknowledged records are not on disk")
    if counts["rejection_lost"]:
        rep.fail("rejection_lost", f"{counts['rejection_lost']} invalid records were acknowledged as durable")
    if counts["rejected_on_disk"]:
        rep.fail("rejected_on_disk", f"{counts['rejected_on_disk']} rejected records are on disk")
    if counts["unexpected_rejections"]:
        rep.fail("unexpected_rejection", f"{counts['unexpected_rejections']} valid records were rejected")
    if counts[UNKNOWN]:
        rep.fail("liveness", f"{counts[UNKNOWN]} records were never acknowledged "
                             f"({counts['unknown_on_disk']} of them are on disk)")

    # Order within each (producer, schema type), over first copies (a duplicate's second copy
    # is counted above, not again here); across types it is reported, not required.
    for (prod, stype), seqs in per_type.items():
        seqs = _first_copies(seqs)
        back = [(a, b) for a, b in zip(seqs, seqs[1:]) if b < a]
        if back:
            counts["out_of_order"] += len(back)
            rep.fail("order", f"{prod} {stype}: {len(back)} times a record follows a higher pseq",
                     {"producer": prod, "schema_type": stype, "pairs": back[:limit]})
    for seqs in per_producer.values():
        firsts = _first_copies(seqs)
        counts["cross_type_inversions"] += sum(1 for a, b in zip(firsts, firsts[1:]) if b < a)

    files, problems = verify([root])
    counts["verified_files"] = files
    counts["verify_problems"] = len(problems)
    for p in problems[:limit]:
        rep.fail("verify", str(p))
    if len(problems) > limit:
        rep.fail("verify", f"... and {len(problems) - limit} more problems")
    temps = temp_files(root)
    counts["temp_files"] = len(temps)
    if temps:
        rep.fail("temp_files", f"{len(temps)} left: {temps[:limit]}")

    # Segment sizes against their limits: a backlog resent after a restart must not overfill one.
    for stype, segs in segment_sizes(root).items():
        max_records, max_bytes = (limits or {}).get(stype, (0, 0))
        over = [(p, n, b) for p, n, b in segs
                if (max_records and n > max_records) or (max_bytes and b > max_bytes and n > 1)]
        rep.segments[stype] = {"segments": len(segs), "largest_records": max((n for _, n, _ in segs), default=0),
                               "largest_bytes": max((b for _, _, b in segs), default=0),
                               "rotate_records": max_records, "rotate_bytes": max_bytes, "over_limit": len(over)}
        if over:
            rep.fail("segment_limit", f"{stype}: {len(over)} of {len(segs)} segments over rotate_records="
                     f"{max_records} / rotate_bytes={max_bytes}", over[:limit])
    # The audit log: one segment_sealed event per sealed segment (manifest, tombstone, catalog), none else.
    trail = check_trail(root)
    rep.trail = trail.summary()
    counts["trail_problems"] = len(trail.problems)
    for p in trail.problems[:limit]:
        rep.fail("audit_trail", p)
    counts["stored"] = stored
    rep.totals = dict(counts)
    return rep


# -- the orchestrator ---------------------------------------------------------------------------
class _Supervisor:
    """``python -m recorder run``: READY lines timestamped as they arrive, stderr to a file."""

    def __init__(self, root: Path, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w", encoding="utf-8")
        cmd = [sys.executable, "-m", "recorder", "run", "--data-root", str(root), "--config", str(config)]
        self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                      text=True, cwd=PACKAGE_DIR.parent, env=_env())
        self.ready: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        assert self.popen.stdout is not None
        self._pump = threading.Thread(target=self._read, args=(self.popen.stdout,), daemon=True)
        self._pump.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("READY "):
                self.ready.put((time.monotonic(), json.loads(line[6:])))

    def next_ready(self, timeout: float) -> tuple[float, dict[str, Any]]:
        """(arrival time, READY JSON) of the next READY line.

        Raises:
            RuntimeError: the supervisor exited or said nothing within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready.get(timeout=0.02)
            except queue.Empty:
                pass
            if self.popen.poll() is not None and self.ready.empty():
                self._pump.join(timeout=2)
                if self.ready.empty():
                    raise RuntimeError(f"the supervisor exited with {self.popen.returncode}; see {self.log_path}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no READY within {timeout:g} s; see {self.log_path}")

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            rc = None
        self._pump.join(timeout=5)
        self._log.close()
        return rc

    def exits(self) -> list[tuple[int, int, int, float]]:
        """(recorder pid, exit status, restart number, backoff s) for every restart the supervisor announced."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [(int(m[1]), int(m[2]), int(m[3]), float(m[4])) for m in _RESTART_LINE.finditer(text)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RECORDER_FAULT"}
    env["PYTHONUNBUFFERED"] = "1"
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
    from recorder._run import endpoints
    from recorder.config import load_config

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
            try:
                rc = p.wait(timeout=args.flush_timeout + 60)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
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
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
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
    from recorder.registry import Registry

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
        f"cross-type seq order   {rec['cross_type_inversions']} inversions (allowed; per type: "
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
        sys.exit(_producer_main(sys.argv[1:]))
    sys.exit("run the soak as: python -m benchmarks soak --kills N")
