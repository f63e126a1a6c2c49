"""The writer of one schema type: owns that type's files, appends batches in order."""

from __future__ import annotations

import os
import queue
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _durable
from .._env import iso_ns
from ._active import ActiveFiles
from ._fsync_pool import SyncPool
from ._rotation import Rotation
from ._routing import Routes
from ._segfiles import EventSink, has_manifest, recent_time, sealed_tail, segment_counts
from ._trail import logged
from ..exceptions import DurabilityError, RecorderError, StorageFull, Unwritable
from .journal import GENESIS, Journal, Recovery, open_journal
from ..schema.registry import TypeSpec
from ..schema.accept import Accepted
from ..schema.validation import safe_json

__all__ = ["Entry", "RETRY_UNWRITABLE_S", "TypeWriter", "open_journal"]


@dataclass(slots=True)
class Entry:
    """One accepted record with the numbers the recorder gave it."""

    accepted: Accepted
    seq: int
    received_ns: int
    producer: str
    pseq: int


_PRODUCERS: dict[str, bytes] = {}  # producer id -> its JSON string


def body(e: Entry) -> bytes:
    """The envelope of ``e`` as an open JSON object, ready for the journal to chain: one join."""
    producer = _PRODUCERS.get(e.producer)
    if producer is None:
        if len(_PRODUCERS) > 65536:
            _PRODUCERS.clear()
        producer = _PRODUCERS[e.producer] = safe_json(e.producer)
    return b"".join((b'{"seq":%d,"received":"' % e.seq, iso_ns(e.received_ns).encode(), b'",', e.accepted.envelope,
                     b',"producer":', producer, b',"pseq":%d,"record":' % e.pseq, e.accepted.record))


def _unlinked(fd: int) -> bool:
    """The open file has no name left (its directory was removed): its lines would never be found."""
    return os.fstat(fd).st_nlink == 0


RETRY_UNWRITABLE_S = 5.0  # an unwritable destination is tried again after this long


@dataclass(slots=True)
class _Group:
    """The lines of one batch that go to one stream (one or more of its segments)."""

    stream: str
    values: dict[str, Any]
    bodies: list[bytes] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Touched:
    """A journal one batch wrote to: where to cut it back to, and which records went in."""

    rel: str
    journal: Journal
    before: int  # its size before the batch
    last_seq: int
    seqs: list[int]


@dataclass
class _Open:
    """Bookkeeping of one open segment."""

    stream: str
    segment: int
    values: dict[str, Any]
    opened: float  # monotonic
    last_append: float


class TypeWriter:
    """Appends entries of one schema type to the segment files its template names.

    Not thread-safe by design: one writer per type, driven by one thread, so
    the append order is the order of ``write`` calls. Where a record goes is
    ``Routes``' job, which segment of its stream and when to move on
    ``Rotation``'s, which files to reopen at start ``ActiveFiles``', and
    syncing a batch's files together ``SyncPool``'s; this class keeps the
    open journals and makes a batch all or nothing.
    """

    def __init__(self, spec: TypeSpec, root_fd: int, header: dict[str, Any],
                 max_open: int, on_event: EventSink, state_fd: int,
                 seal: Callable[[str, str, str, int], None] | None = None,
                 admit: Callable[[str, int], None] | None = None,
                 usage: Callable[[str, int], None] | None = None) -> None:
        self.spec = spec
        self.root_fd = root_fd
        self.header = header
        self.max_open = max_open
        self.on_event = on_event
        self.seal_fn = seal
        self.admit = admit
        self.usage = usage
        self.open: OrderedDict[str, Journal] = OrderedDict()
        self.info: dict[str, _Open] = {}
        self.recovered: dict[str, Recovery] = {}
        self.finished: queue.SimpleQueue[str] = queue.SimpleQueue()  # filled by the sealer
        self._counted: dict[str, int] = {}  # journal -> bytes already added to storage usage
        self._swept: set[str] = set()  # directories cleared of stale temp files since start
        self._pinned: set[str] = set()  # journals the batch being written uses: never evicted meanwhile
        #: stream -> (monotonic time to try again, the error) of destinations that could not be written
        self.unwritable: dict[str, tuple[float, Unwritable]] = {}
        self.unwritable_refused = 0  # records refused because their destination could not be written
        self.state = ActiveFiles(state_fd, spec.name)
        self.active = self.state.files  # journal path -> "open", "sealing" or "recent <time>"
        self.routes = Routes(spec)
        self.rotating = self.routes.rotating
        self.rotation = Rotation(spec, self.routes, root_fd, self.state)
        self._syncer = SyncPool(spec.name, spec.fsync)

    def reopen_active(self) -> list[dict[str, Any]]:
        """Reopen files active before the last stop, resubmit unfinished seals; returns last whole lines.

        A segment found sealed ("sealing", or "open" beside its manifest) gets
        the ``segment_sealed`` event a crash may have kept from the audit log
        (looked up there first, so never twice). A reopened segment that is
        full, or that a later segment of its stream follows, is sealed now:
        its next record would otherwise pass a limit or go nowhere.
        """
        tail: list[dict[str, Any]] = []
        current = self.rotation.current
        if self.seal_fn is not None:
            resubmit = [rel for rel, state in sorted(self.active.items()) if state == "sealing"
                        or (state == "open" and self.rotating and has_manifest(self.root_fd, rel))]
            have = logged(self.root_fd, "segment_sealed", resubmit) if resubmit else set()
            for rel in resubmit:
                self.active[rel] = "sealing"  # sealed, though the state file may not have said so before a crash
                stream, segment = self.routes.parse(rel)
                self.rotation.advance(stream, segment)
                if rel not in have:
                    self.on_event("segment_sealed", {"path": rel, **segment_counts(self.root_fd, rel),
                                                     "segment": segment, "recovered": True})
                self.seal_fn(self.spec.name, rel, stream.replace("\0", "{segment}"), segment)
        for rel, state in sorted(self.active.items()):
            if state == "sealing" or state.startswith("recent"):
                tail.extend(sealed_tail(self.root_fd, rel))
                if state.startswith("recent"):
                    self.state.recent.append((rel, recent_time(state)))
        self.state.recent.sort(key=lambda r: r[1])
        opened = [r for r, st in sorted(self.active.items()) if st == "open"][-self.max_open:]
        for rel in opened:
            stream, segment = self.routes.parse(rel)
            current[stream] = max(current.get(stream, 0), segment)
            self.journal(rel, stream, segment, {})
            tail.extend(self.recovered[rel].tail)
        if self.rotating:
            now = time.monotonic()
            for rel in opened:
                j, info = self.open.get(rel), self.info.get(rel)
                if j is not None and info is not None and j.records and (
                        info.segment < current.get(info.stream, 0) or self.rotation.full(j, info.opened, now)):
                    self._try_seal(rel)
        return tail

    def route(self, entry: Entry) -> tuple[str, str, dict[str, Any]]:
        """(stream, journal path, values) for ``entry``."""
        values = self.routes.values(entry.accepted.path_values, entry.received_ns)
        stream = self.routes.stream(values)
        if not self.rotating:
            return stream, stream, values
        return stream, self.routes.journal_rel(stream, self.rotation.segment(stream)), values

    # -- appending -------------------------------------------------------------
    def write(self, entries: list[Entry]) -> dict[int, Unwritable]:
        """Append ``entries`` in order: one write per file touched, all fdatasync'd before this returns.

        A stream's records go to its current segment until it is full
        (``rotate_records``, ``rotate_bytes``), the rest to the next segment,
        and so on: one batch may fill several segments, each sealed once the
        whole batch is durable. Each part a later part follows is synced
        before the next segment is started (the new header names its chain
        head); the other files are synced together at the end.

        A destination that cannot be written (see ``Unwritable``), or whose
        file was removed while open, costs only its own records: they are
        returned (by recorder seq) and the rest are written. An unwritable
        stream is tried again ``RETRY_UNWRITABLE_S`` after it failed; until
        then its records are refused at once.

        Raises:
            StorageFull: the disk or a storage limit is full; nothing of the failed batch is kept.
            DurabilityError: a write or sync failed; that batch is cut back.
        """
        if not self.finished.empty():
            self.state.drain(self.finished)
        groups: dict[str, _Group] = {}  # stream -> its lines of this batch
        size = 0
        for e in entries:
            stream, _rel, values = self.route(e)
            b = body(e)
            size += len(b) + 140  # the chain's fields and the newline, roughly
            g = groups.get(stream)
            if g is None:
                g = groups[stream] = _Group(stream, values)
            g.bodies.append(b)
            g.seqs.append(e.seq)
        if self.admit is not None:
            self.admit(self.spec.name, size)
        now = time.monotonic()
        refused: dict[int, Unwritable] = {}
        touched: list[_Touched] = []
        filled: list[str] = []  # segments this batch filled: sealed once it is durable
        moved: list[tuple[str, int | None, tuple[int, str] | None]] = []  # streams moved on: (stream, old values)
        try:
            for g in groups.values():
                self._write_isolated(g, touched, filled, moved, refused, now)
            pending = [t.journal for t in touched if t.journal.pending]
            if len(pending) == 1:
                pending[0].sync()
            elif pending:
                self._syncer.sync_all(pending)
        except (StorageFull, DurabilityError):
            # All or nothing: a batch is acknowledged as a whole, so every file
            # it touched goes back to where it was before it; a segment the
            # batch started goes back to nothing (its header chained from the
            # part cut from the segment before it, and is written anew).
            for t in touched:
                self._cut_back(t.rel, t.journal, t.before)
            for stream, seg, head in reversed(moved):
                self.rotation.restore(stream, seg, head)
            raise
        finally:
            self._pinned.clear()
        for t in touched:
            if t.journal.fd >= 0 and _unlinked(t.journal.fd):
                self._gone(t, refused)  # its directory was removed under it: acknowledging would lie
                continue
            t.journal.last_seq = t.last_seq
            self._count(t.rel, t.journal)
            self.info[t.rel].last_append = now
        for t in touched:
            if t.rel in self.info and (t.rel in filled or (
                    self.rotating and self.rotation.full(t.journal, self.info[t.rel].opened, now))):
                self._try_seal(t.rel)
        return refused

    def _write_isolated(self, g: _Group, touched: list[_Touched], filled: list[str],
                        moved: list[tuple[str, int | None, tuple[int, str] | None]],
                        refused: dict[int, Unwritable], now: float) -> None:
        """Write one stream's lines; an Unwritable destination refuses them and leaves the others alone."""
        bad = self.unwritable.get(g.stream)
        if bad is not None and now < bad[0]:
            refused.update(dict.fromkeys(g.seqs, bad[1]))
            return
        marks = len(touched), len(filled), len(moved)
        try:
            self._write_group(g, touched, filled, moved)
        except Unwritable as e:
            for t in touched[marks[0]:]:
                self._cut_back(t.rel, t.journal, t.before)
            for stream, seg, head in reversed(moved[marks[2]:]):
                self.rotation.restore(stream, seg, head)
            del touched[marks[0]:], filled[marks[1]:], moved[marks[2]:]
            self.unwritable[g.stream] = (now + RETRY_UNWRITABLE_S, e)
            self.unwritable_refused += len(g.seqs)
            refused.update(dict.fromkeys(g.seqs, e))
            self.on_event("destination_unwritable", {"path": e.path, "error": str(e), "records": len(g.seqs),
                                                     "retry_s": RETRY_UNWRITABLE_S})
            return
        if bad is not None:
            del self.unwritable[g.stream]
            self.on_event("destination_writable", {"path": g.stream.replace("\0", "{segment}")})

    def _gone(self, t: _Touched, refused: dict[int, Unwritable]) -> None:
        """A journal whose file was unlinked while open: drop it; the batch's lines in it are refused."""
        err = Unwritable(t.rel, "write", None, "the file was removed while open (its directory deleted?)")
        refused.update(dict.fromkeys(t.seqs, err))
        self.unwritable_refused += len(t.seqs)
        self.open.pop(t.rel, None)
        self.info.pop(t.rel, None)
        self.active.pop(t.rel, None)
        _durable.close(t.journal.fd)
        _durable.close(t.journal.dir_fd)
        t.journal.fd = -1
        self.state.save()
        self.on_event("destination_unwritable", {"path": t.rel, "error": str(err), "records": len(t.seqs),
                                                 "retry_s": 0})

    def _write_group(self, g: _Group, touched: list[_Touched], filled: list[str],
                     moved: list[tuple[str, int | None, tuple[int, str] | None]]) -> None:
        """Write one stream's lines of a batch, into as many of its segments as its limits need."""
        i, n = 0, len(g.bodies)
        chained = False  # the segment below was started after an earlier part of this batch
        while i < n:
            seg = self.rotation.current.get(g.stream, 0)
            rel = self.routes.journal_rel(g.stream, seg) if self.rotating else g.stream
            j = self.journal(rel, g.stream, seg, g.values)
            self._pinned.add(rel)
            k = n - i
            if self.rotating:
                k = self.rotation.fitting(g.bodies, i, j)
                if k == 0:  # full from earlier batches, which are durable: seal it, go on in the next
                    self._pinned.discard(rel)
                    self._try_seal(rel)
                    self.rotation.advance(g.stream, seg)
                    continue
            touched.append(_Touched(rel, j, 0 if chained and not j.records else j.size, g.seqs[i + k - 1],
                                    g.seqs[i:i + k]))
            j.write(g.bodies[i:i + k])
            i += k
            if i < n:  # the rest goes on in the next segment, whose header names this part's head
                chained = True
                j.sync()
                filled.append(rel)
                moved.append(self.rotation.move_on(g.stream, seg, j.head))

    def _try_seal(self, rel: str) -> None:
        """Seal after a batch is durable: a failure is reported, never a refusal of stored records."""
        try:
            self.seal(rel)
        except RecorderError as e:
            self.on_event("seal_failed", {"path": rel, "error": str(e)})

    def _count(self, rel: str, j: Journal) -> None:
        """Add to storage usage what this journal holds beyond what was already counted."""
        if self.usage is not None:
            self.usage(self.spec.name, j.size - self._counted.get(rel, 0))
        self._counted[rel] = j.size

    def journal(self, rel: str, stream: str | None = None, segment: int = 0,
                values: dict[str, Any] | None = None) -> Journal:
        """The open journal of ``rel``, opening (and recovering) it if needed."""
        j = self.open.get(rel)
        if j is not None:
            self.open.move_to_end(rel)
            if values and not self.info[rel].values:
                self.info[rel].values = values  # reopened at start: learn its session now
            return j
        while len(self.open) >= self.max_open:
            # the least recently used, unless the batch being written still needs it
            old_rel = next((r for r in self.open if r not in self._pinned), None)
            if old_rel is None:
                break
            old = self.open.pop(old_rel)
            self._close(old)
            self.info.pop(old_rel, None)
            if old_rel in self.active:  # closed, not sealed: its tail still matters for de-duplication
                self.state.to_recent(old_rel)
        stream = stream or rel
        *dirs, name = rel.split("/")
        dir_fd = _durable.open_dirs(self.root_fd, dirs, rel)
        d = "/".join(dirs)
        if d not in self._swept:  # a checkpoint a crash interrupted left its hidden temp file here
            self._swept.add(d)
            _durable.sweep_temp(dir_fd)
        prev = self.rotation.prev_head(stream, segment, dir_fd, self.open) if self.rotating and segment > 0 else GENESIS
        header = {**self.header, "schema_type": self.spec.name, "path": rel,
                  "hash": self.spec.config.hash, "created": iso_ns(time.time_ns())}
        if self.rotating:
            header["segment"] = segment
        j, rec = open_journal(dir_fd, name, rel, header, self.on_event,
                              hashing=self.spec.hashing, fsync=self.spec.fsync, prev_head=prev)
        self.recovered[rel] = rec
        self._count(rel, j)  # its header, or what a reopened file holds beyond what was counted
        now = time.monotonic()
        self.open[rel] = j
        self.info[rel] = _Open(stream, segment, values or {}, now, now)
        if self.active.get(rel) != "open":
            self.active[rel] = "open"
            self.state.save()
        return j

    # -- sealing ---------------------------------------------------------------
    def seal(self, rel: str) -> None:
        """Close the segment ``rel`` and hand it to the sealer; the stream's next record starts a new one."""
        j = self.open.pop(rel, None)
        info = self.info.pop(rel, None)
        if j is None or info is None:
            return
        try:
            self._close(j)  # closes even when its checkpoint cannot be written
        except RecorderError as e:
            self.on_event("checkpoint_failed", {"path": rel, "error": str(e)})
        self.rotation.closed(info.stream, info.segment, j.head)
        self.active[rel] = "sealing"
        self.state.save()
        self.on_event("segment_sealed", {"path": rel, "records": j.records, "bytes": j.size,
                                         "segment": info.segment})
        if self.seal_fn is not None:
            self.seal_fn(self.spec.name, rel, info.stream.replace("\0", "{segment}"), info.segment)

    def housekeeping(self, now: float) -> None:
        """Seal segments that reached their age, or whose session went idle."""
        self.state.drain(self.finished)
        if not self.rotating:
            return
        for rel, info in list(self.info.items()):
            j = self.open.get(rel)
            if j is None or j.records == 0:
                continue
            idle = self.rotation.idle
            if (idle and now - info.last_append >= idle) or self.rotation.full(j, info.opened, now):
                self._try_seal(rel)

    def end_session(self, user_id: str | None, session_id: str) -> int:
        """Seal every open segment of one session; returns how many.

        A type whose path has no ``{segment}`` keeps one file per stream and
        is never sealed: its next record would have nowhere else to go.
        """
        if not self.rotating:
            return 0
        n = 0
        for rel, info in list(self.info.items()):
            v = info.values
            if v.get("session_id") == session_id and (user_id is None or v.get("user_id") == user_id):
                self.seal(rel)
                n += 1
        return n

    def _cut_back(self, rel: str, j: Journal, size: int) -> None:
        """Cut a journal a failed batch touched back to ``size`` and drop it: the next batch reopens it.

        The failed batch was never acknowledged; what it wrote past ``size``
        is unknown (``Journal.cut_back``), so the file is recovered anew.
        """
        if j.fd < 0:
            return
        self.open.pop(rel, None)
        self.info.pop(rel, None)
        try:
            j.cut_back(size, close=True)
        finally:
            _durable.close(j.dir_fd)

    def _close(self, j: Journal) -> None:
        try:
            j.close()
        finally:
            _durable.close(j.dir_fd)

    def close(self) -> None:
        """Close every file, leaving a head checkpoint beside each."""
        while self.open:
            _, j = self.open.popitem()
            self._close(j)
        self.info.clear()
        self._syncer.shutdown()
