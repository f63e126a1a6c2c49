"""The writers of ``compare``, run in its producer processes, and the table of variants.

``python -m benchmarks._peers --producer ...`` is one producer: it builds its writer (the recorder's
``Client``, the reference client, or a peer that writes itself), warms up, waits for ``GO`` on stdin,
sends on a deadline schedule (or unpaced), flushes, writes its samples and prints one JSON line.
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
import sqlite3
import sys
import time
from array import array
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from . import _reference

SCHEMA_TYPE = "a3cp_message"
POOL = 1024  # distinct records per producer, cycled
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
    Variant("reference", "reference (minimal loop)", "fdatasync before ack (group commit)", True),
    Variant("flock", "flock + append (A3CP)", "none: page cache, no fsync", False),
    Variant("flock-fsync", "flock + append + fsync", "fsync per record", True),
    Variant("logging", "logging QueueHandler", "none: page cache, listener thread", False),
    Variant("sqlite", "SQLite WAL FULL, 1/commit", "fsync per commit", True),
    Variant("sqlite-100", "SQLite WAL FULL, 100/commit", "fsync per 100-record commit", True),
)}
SERVED = ("recorder", "reference")  # variants whose writing is done by a server process

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

    def wait(self, seconds: float) -> None:
        """Pace: idle for ``seconds`` (a writer with acknowledgements to take takes them meanwhile)."""
        time.sleep(seconds)  # pacing a capture loop, not waiting on a condition

    def blocked(self) -> int:
        """How many record() calls so far waited for room (flow control); 0 where there is none."""
        return 0

    def counters(self) -> dict[str, float]:
        """The client's own numeric counters, where it keeps some."""
        return {}

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

    def blocked(self) -> int:
        return int(self.client.counters.get("blocked", 0))

    def counters(self) -> dict[str, float]:
        return {k: v for k, v in self.client.counters.items() if isinstance(v, (int, float))}

    def close(self) -> None:
        self.client.close()


class _ReferencePeer(_Peer):
    """The reference client (benchmarks/_reference.py): durable when its server's ack arrives."""

    def __init__(self, root: str, index: int) -> None:
        self.client = _reference.Producer(root, f"ref{index:02d}")
        self.done = self.client.done

    def record(self, d: dict[str, Any], t0: int) -> None:
        self.client.record(d, t0)

    def wait(self, seconds: float) -> None:
        self.client.wait(seconds)

    def flush(self) -> None:
        self.client.flush()

    def blocked(self) -> int:
        return self.client.blocked

    def close(self) -> None:
        self.client.close()


def _producer(argv: Sequence[str] | None = None) -> int:
    """One producer: warm up, wait for GO on stdin, send, flush, write samples, print a JSON line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks._peers --producer")
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
    elif a.variant == "reference":
        writer = _ReferencePeer(a.root, a.index)
    elif a.variant in ("flock", "flock-fsync"):
        writer = _FlockPeer(os.path.join(a.root, JSONL_FILE), fsync=a.variant == "flock-fsync")
    elif a.variant == "logging":
        writer = _LoggingPeer(os.path.join(a.root, f"log-{a.index}.jsonl"), a.index)
    else:
        writer = _SqlitePeer(os.path.join(a.root, SQLITE_FILE), a.batch)
    items = itertools.cycle(pool)

    def send(seconds: float, calls: array[int] | None,
             blocked: array[int] | None) -> tuple[int, float, int]:
        """Send for ``seconds`` on a deadline schedule (or unpaced); (records, max lag s, late records).

        The time of each record() call goes to ``calls``, or to ``blocked`` when the call waited for
        room (the writer's flow control).
        """
        record, clock, clock_ns, wait = writer.record, time.perf_counter, time.perf_counter_ns, writer.wait
        n_blocked = writer.blocked
        count, lag_max, late = 0, 0.0, 0
        t0 = clock()
        end = t0 + seconds
        period = 1.0 / a.rate if a.rate > 0 else 0.0
        t0 += a.phase * period  # paced producers interleave instead of ticking together
        while True:
            now = clock()
            if period:
                due = t0 + count * period
                if due >= end or now >= end:  # behind schedule: stop on time all the same
                    break
                if now < due:
                    wait(due - now)
                else:
                    lag_max = max(lag_max, now - due)
                    late += now - due > period
            elif now >= end:
                break
            rec = next(items)
            b0 = n_blocked()
            s0 = clock_ns()
            record(rec, s0)
            s1 = clock_ns()
            if calls is not None and blocked is not None:
                (blocked if n_blocked() != b0 else calls).append(s1 - s0)
            count += 1
        return count, lag_max, late

    warm, _, _ = send(a.warmup, None, None)
    writer.flush()
    writer.reset()
    print("WARM", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1
    calls, blocked = array("q"), array("q")
    counters0 = writer.counters()
    cpu0 = os.times()
    t_start = time.time()
    records, lag_max, late = send(a.seconds, calls, blocked)
    t_sent = time.time()
    writer.flush()
    t_done = time.time()
    cpu1 = os.times()
    with open(a.samples + ".call", "wb") as f:
        calls.tofile(f)
    with open(a.samples + ".blocked", "wb") as f:
        blocked.tofile(f)
    with open(a.samples + ".lat", "wb") as f:
        writer.samples().tofile(f)
    counters = {k: v - counters0.get(k, 0) for k, v in writer.counters().items()}
    writer.close()
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    out = {"index": a.index, "records": records, "sent_total": warm + records, "t_start": t_start,
           "t_sent": t_sent, "t_done": t_done, "cpu_s": round(cpu_s, 3),
           "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "lag_max_ms": round(lag_max * 1e3, 3), "late": late, "client_counters": counters}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    if "--producer" in sys.argv[1:]:
        sys.exit(_producer())
    sys.exit("usage: python -m benchmarks compare ... (this module holds its producers; see --help there)")

