"""The writer actor: one thread per schema type, validating and group-committing.

Double buffering without a timer: the router keeps filling the inbox (the
front buffer) while the actor writes and fdatasyncs the batch it took (the
back buffer); when that sync returns, the actor takes everything that
arrived meanwhile as its next batch. An idle actor commits one record at
once; under load batches grow by themselves.
"""

from __future__ import annotations

import queue
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ._ids import with_default_version
from .exceptions import DurabilityError, RecorderError, StorageFull, ValidationError
from .protocol import Record
from .store import Store
from .writer import Entry

__all__ = ["WriterActor", "Done", "Item"]

#: (frame, recorder sequence number, receive time in ns)
Item = tuple[Record, int, int]
_STOP = None
MAX_BATCH_BYTES = 1 << 20  # a batch stays small enough for restart de-duplication to see whole
HOUSEKEEPING_S = 1.0  # an idle actor checks segment age and session idleness this often
#: histogram bucket bounds (upper, inclusive) of recorder_ack_latency_seconds and recorder_batch_size
LATENCY_BOUNDS_NS = tuple(int(s * 1e9) for s in (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class EndSession:
    """Seal this session's open segments (sent to every actor when a session ends)."""

    user_id: str | None
    session_id: str


@dataclass(slots=True)
class Done:
    """What one committed batch did, reported back to the router."""

    schema_type: str
    durable: list[tuple[str, int]] = field(default_factory=list)  # (producer, pseq)
    rejected: list[tuple[str, int, str, str, str]] = field(default_factory=list)
    fatal: RecorderError | None = None
    ended: list[tuple[str | None, str]] = field(default_factory=list)  # sessions that ended


class WriterActor(threading.Thread):
    """Owns the TypeWriter of one schema type; fed through ``inbox``."""

    def __init__(self, store: Store, schema_type: str, report: Callable[[Done], None],
                 max_batch: int = 1024) -> None:
        super().__init__(name=f"writer-{schema_type}", daemon=True)
        self.store = store
        self.schema_type = schema_type
        self.writer = store.writers[schema_type]
        self.report = report
        self.max_batch = max_batch
        self.inbox: queue.SimpleQueue[Item | EndSession | None] = queue.SimpleQueue()
        self.accept = store.acceptors[schema_type]
        self.default_version = store.registry.get(schema_type).config.default_version
        # counters read by `recorder stats` (written only by this thread)
        self.records = 0
        self.bytes = 0
        self.rejects = 0
        self.batches = 0
        self.batch_sizes: deque[int] = deque(maxlen=4096)
        self.latencies_ns: deque[int] = deque(maxlen=16384)  # receive -> durable
        self.rejects_by_code: Counter[str] = Counter()
        # histograms since start, per bucket of the bounds above (the last: beyond them)
        self.latency_counts = [0] * (len(LATENCY_BOUNDS_NS) + 1)
        self.latency_sum_ns = 0
        self.batch_counts = [0] * (len(BATCH_BOUNDS) + 1)
        self.full_since = 0.0
        self._last_housekeeping = time.monotonic()

    def stop(self) -> None:
        """Ask the actor to finish what it has queued, then exit."""
        self.inbox.put(_STOP)

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - a dead writer thread would stall its type silently
            err = e if isinstance(e, RecorderError) else RecorderError(f"writer {self.schema_type}: {e!r}")
            self.report(Done(self.schema_type, fatal=err))  # the recorder exits; the supervisor restarts it

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self.inbox.get(timeout=HOUSEKEEPING_S)
            except queue.Empty:
                self._housekeeping()
                continue
            if first is _STOP:
                break
            batch: list[Item] = []
            size = 0
            item: Item | EndSession | None = first
            while True:
                if item is _STOP:
                    stopping = True
                    break
                if isinstance(item, EndSession):
                    self._end_session(batch, item)
                else:
                    batch.append(item)
                    size += len(item[0].record)
                if len(batch) >= self.max_batch or size >= MAX_BATCH_BYTES:
                    break
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            done = self._commit(batch)
            self.report(done)  # acknowledge first; housekeeping is off the ack path
            if done.fatal is not None:
                return
            if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_S:  # busy types seal idle sessions too
                self._housekeeping()

    def _housekeeping(self) -> None:
        self._last_housekeeping = time.monotonic()
        try:
            self.writer.housekeeping(time.monotonic())
        except RecorderError as e:
            self.store.event("housekeeping_failed", {"schema_type": self.schema_type, "error": str(e)})

    def _end_session(self, batch: list[Item], end: EndSession) -> None:
        # Records taken before the end marker belong to the session's last segment.
        if batch:
            self.report(self._commit(batch))
            batch.clear()
        try:
            self.writer.end_session(end.user_id, end.session_id)
        except RecorderError as e:
            self.store.event("housekeeping_failed", {"schema_type": self.schema_type, "error": str(e)})

    def _commit(self, batch: list[Item]) -> Done:
        done = Done(self.schema_type)
        entries: list[Entry] = []
        size = 0
        for frame, seq, received in batch:
            if self.default_version and frame.schema_version is None:
                with_default_version(frame, self.default_version)
            try:
                acc = self.accept(frame)
            except ValidationError as e:
                self._reject(done, frame, e)
                continue
            entries.append(Entry(acc, seq, received, frame.producer, frame.pseq))
            size += len(acc.record)
        if not entries:
            return done
        try:
            self.writer.write(entries)
        except StorageFull as e:
            # Refuse explicitly and keep going: the next batch tries again,
            # so writing resumes by itself when space returns.
            self.full_since = self.full_since or time.monotonic()
            for en in entries:
                done.rejected.append((en.producer, en.pseq, e.code, "$", e.reason))
            self.rejects += len(entries)
            self.rejects_by_code[e.code] += len(entries)
            return done
        except DurabilityError as e:
            done.fatal = e  # never retried on this descriptor: exit, recover from disk
            return done
        self.full_since = 0.0
        now = time.time_ns()
        done.durable = [(en.producer, en.pseq) for en in entries]
        done.ended = [(en.accepted.user_id, en.accepted.session_id or "") for en in entries if en.accepted.ends_session]
        self.records += len(entries)
        self.bytes += size
        self.batches += 1
        self.batch_sizes.append(len(entries))
        self.batch_counts[bisect_left(BATCH_BOUNDS, len(entries))] += 1
        latencies = [now - en.received_ns for en in entries]
        self.latencies_ns.extend(latencies)
        counts = self.latency_counts
        for ns in latencies:
            counts[bisect_left(LATENCY_BOUNDS_NS, ns)] += 1
        self.latency_sum_ns += sum(latencies)
        return done

    def _reject(self, done: Done, frame: Record, e: ValidationError) -> None:
        self.rejects += 1
        self.rejects_by_code[e.code] += 1
        done.rejected.append((frame.producer, frame.pseq, e.code, e.field, e.reason))
        try:
            self.store.reject(frame.schema_type, frame.record, e, frame.producer, frame.pseq, "wire")
        except StorageFull:
            pass  # counted as a rejection already; the disk has no room for the copy
