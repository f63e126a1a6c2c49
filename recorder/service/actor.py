"""The writer actor of one schema type: a front buffer the ingest loop fills, a sync thread that commits.

Double buffering without a timer: the ingest loop accepts records and
appends them to the actor's front buffer; the actor's sync thread swaps it
for an empty one, writes and fdatasyncs what it took (the back buffer; the
GIL is free during fdatasync), reports the batch, and swaps again. An idle
actor commits one record at once; under load batches grow by themselves.
The actor alone owns its type's files, state and order: only its sync
thread calls its TypeWriter.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..schema._ids import with_default_version
from ..exceptions import DurabilityError, RecorderError, StorageFull, Unwritable, ValidationError
from ..protocol import Record
from ..store import Store
from ..storage.writer import Entry

__all__ = ["BATCH_BOUNDS", "LATENCY_BOUNDS_NS", "MAX_BATCH_BYTES", "Done", "EndSession", "WriterActor"]

MAX_BATCH = 1024  # records per commit ...
MAX_BATCH_BYTES = 1 << 20  # ... and bytes: small enough for restart de-duplication to see a batch whole
HOUSEKEEPING_S = 1.0  # an idle actor checks segment age and session idleness this often
#: histogram bucket bounds (upper, inclusive) of recorder_ack_latency_seconds and recorder_batch_size
LATENCY_BOUNDS_NS = tuple(int(s * 1e9) for s in (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class EndSession:
    """Seal this session's open segments (given to every actor when a session ends)."""

    user_id: str | None
    session_id: str


@dataclass(slots=True)
class Done:
    """What one committed batch did, reported back to the ingest loop."""

    schema_type: str
    durable: list[tuple[str, int]] = field(default_factory=list)  # (producer, pseq)
    rejected: list[tuple[str, int, str, str, str]] = field(default_factory=list)
    fatal: RecorderError | None = None
    ended: list[tuple[str | None, str]] = field(default_factory=list)  # sessions that ended


class WriterActor:
    """Owns the TypeWriter of one schema type.

    The ingest loop calls ``accept`` and ``submit``; the sync thread does the
    rest. ``buffered`` (bytes accepted and not yet committed) is what the
    loop's memory bound counts.
    """

    def __init__(self, store: Store, schema_type: str, report: Callable[[Done], None]) -> None:
        self.store = store
        self.schema_type = schema_type
        self.writer = store.writers[schema_type]
        self.report = report
        self._accept = store.acceptors[schema_type]
        self.accept_counts = self._accept.counts
        self.default_version = store.registry.get(schema_type).config.default_version
        self._front: list[Entry | EndSession] = []
        self._cv = threading.Condition(threading.Lock())
        self._stopping = False
        self.buffered = 0  # bytes in the front buffer and the batch being committed
        self.submitted_upto = 0  # the highest recorder seq handed to this actor (the loop's)
        self.reported_upto = 0  # the highest seq whose batch was reported (set after the report)
        self.queued = 0  # records likewise
        self._thread = threading.Thread(target=self._run, name=f"sync-{schema_type}", daemon=True)
        # counters read by `recorder stats` (written only by the sync thread, but rejects: the loop)
        self.records = 0
        self.bytes = 0
        self.rejects = 0
        self.batches = 0
        self.batch_sizes: deque[int] = deque(maxlen=4096)
        self.latencies_ns: deque[int] = deque(maxlen=16384)  # receive -> durable
        self.rejects_by_code: Counter[str] = Counter()
        self.latency_counts = [0] * (len(LATENCY_BOUNDS_NS) + 1)
        self.latency_sum_ns = 0
        self.batch_counts = [0] * (len(BATCH_BOUNDS) + 1)
        self.full_since = 0.0
        self.commit_cpu_ns = 0  # the sync thread's CPU in commits (envelope, chain, write, fdatasync)
        self._last_housekeeping = time.monotonic()

    # -- the ingest loop's side ------------------------------------------------
    def accept(self, frame: Record, seq: int, received: int) -> Entry:
        """Run the accept step on one frame (in the loop thread).

        Raises:
            ValidationError: the record is refused; nothing is buffered.
        """
        if self.default_version and frame.schema_version is None:
            with_default_version(frame, self.default_version)
        return Entry(self._accept(frame), seq, received, frame.producer, frame.pseq)

    def submit(self, items: list[Entry | EndSession], size: int) -> None:
        """Hand accepted entries (and session ends, in order) to the sync thread: one lock per call."""
        for item in reversed(items):
            if isinstance(item, Entry):
                self.submitted_upto = item.seq
                break
        with self._cv:
            self._front.extend(items)
            self.buffered += size
            self.queued += len(items)
            self._cv.notify()

    def count_reject(self, code: str) -> None:
        self.rejects += 1
        self.rejects_by_code[code] += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the sync thread to commit what it holds, then exit."""
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the sync thread -----------------------------------------------------
    def cpu_ns(self) -> int:
        """CPU time of the sync thread so far (0 before it starts or after it ends)."""
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            return 0
        try:
            return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
        except OSError:
            return 0

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - a dead sync thread would stall its type silently
            err = e if isinstance(e, RecorderError) else RecorderError(f"writer {self.schema_type}: {e!r}")
            self.report(Done(self.schema_type, fatal=err))  # the recorder exits; the supervisor restarts it

    def _loop(self) -> None:
        while True:
            with self._cv:
                if not self._front and not self._stopping:
                    self._cv.wait(HOUSEKEEPING_S)
                taken, self._front = self._front, []
                stopping = self._stopping
            if not taken:
                if stopping:
                    return
                self._housekeeping()
                continue
            if not self._commit_all(taken):
                return
            if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_S:  # busy types seal idle sessions too
                self._housekeeping()

    def _commit_all(self, taken: list[Entry | EndSession]) -> bool:
        """Commit what was taken in batches of bounded size, session ends in their place; False: fatal."""
        batch: list[Entry] = []
        size = 0
        for item in taken:
            if isinstance(item, EndSession):
                if batch and not self._commit(batch, size):
                    return False
                batch, size = [], 0
                self._end_session(item)
                self._release(1, 0)
                continue
            batch.append(item)
            size += len(item.accepted.record)
            if len(batch) >= MAX_BATCH or size >= MAX_BATCH_BYTES:
                if not self._commit(batch, size):
                    return False
                batch, size = [], 0
        return not batch or self._commit(batch, size)

    def _release(self, n: int, size: int) -> None:
        with self._cv:
            self.queued -= n
            self.buffered -= size

    def _housekeeping(self) -> None:
        self._last_housekeeping = time.monotonic()
        try:
            self.writer.housekeeping(time.monotonic())
        except RecorderError as e:
            self.store.event("housekeeping_failed", {"schema_type": self.schema_type, "error": str(e)})

    def _end_session(self, end: EndSession) -> None:
        try:
            self.writer.end_session(end.user_id, end.session_id)
        except RecorderError as e:
            self.store.event("housekeeping_failed", {"schema_type": self.schema_type, "error": str(e)})

    def _commit(self, entries: list[Entry], size: int) -> bool:
        """Write and fdatasync one batch, then report it (acknowledge first: housekeeping is off the ack path)."""
        done = Done(self.schema_type)
        t0 = time.thread_time_ns()
        try:
            refused = self.writer.write(entries)
        except StorageFull as e:
            # Refuse explicitly and keep going: the next batch tries again,
            # so writing resumes by itself when space returns.
            self.full_since = self.full_since or time.monotonic()
            for en in entries:
                done.rejected.append((en.producer, en.pseq, e.code, "$", e.reason))
            self.rejects += len(entries)
            self.rejects_by_code[e.code] += len(entries)
            self._release(len(entries), size)
            self.report(done)
            self.reported_upto = entries[-1].seq
            return True
        except DurabilityError as e:
            done.fatal = e  # never retried on this descriptor: exit, recover from disk
            self.report(done)
            return False
        finally:
            self.commit_cpu_ns += time.thread_time_ns() - t0
        self.full_since = 0.0
        last = entries[-1].seq
        if refused:
            entries = self._refuse(done, entries, refused)
        now = time.time_ns()
        done.durable = [(en.producer, en.pseq) for en in entries]
        done.ended = [(en.accepted.user_id, en.accepted.session_id or "") for en in entries if en.accepted.ends_session]
        n = len(entries)
        if n:
            self.records += n
            self.bytes += sum(len(en.accepted.record) for en in entries)
            self.batches += 1
            self.batch_sizes.append(n)
            self.batch_counts[bisect_left(BATCH_BOUNDS, n)] += 1
            latencies = [now - en.received_ns for en in entries]
            self.latencies_ns.extend(latencies)
            counts = self.latency_counts
            for ns in latencies:
                counts[bisect_left(LATENCY_BOUNDS_NS, ns)] += 1
            self.latency_sum_ns += sum(latencies)
        self._release(len(done.durable) + len(done.rejected), size)
        self.report(done)
        self.reported_upto = last
        return True

    def _refuse(self, done: Done, entries: list[Entry], refused: dict[int, Unwritable]) -> list[Entry]:
        """Entries whose destination cannot be written are refused (quarantined); returns the rest."""
        kept = []
        for en in entries:
            err = refused.get(en.seq)
            if err is None:
                kept.append(en)
                continue
            self.rejects += 1
            self.rejects_by_code[err.code] += 1
            done.rejected.append((en.producer, en.pseq, err.code, "$", err.reason))
            frame = Record(en.producer, en.pseq, self.schema_type, en.accepted.record)
            try:
                self.store.reject(self.schema_type, frame.record, err, en.producer, en.pseq, "wire")
            except StorageFull:
                pass  # counted as a rejection already; the disk has no room for the copy
        return kept
