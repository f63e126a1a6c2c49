"""Play a recording back in recorder order, on its original schedule or faster.

``replay()`` merges the chosen files by ``seq`` (the order ``read`` yields)
and holds each record back until its original offset from the first one,
divided by ``speed``. Files are chosen and skipped with the catalog and the
manifests' time ranges, and opened only when the merge reaches them, so
seeking into a long recording reads only what overlaps the window.
"""

from __future__ import annotations

import calendar
import ctypes
import heapq
import os
import platform
import random
import re
import sys
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import msgspec

from .catalog import Segment
from .exceptions import CorruptionError, RecorderError
from .reader import INTERNAL_DIR, _catalog, _py

__all__ = ["Clock", "Replay", "ScheduleStats", "SimulatedClock", "SystemClock", "replay", "parse_time"]

By = Literal["received", "timestamp"]

# -- times ----------------------------------------------------------------------
_ISO = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,12}))?)?"
                  r"(Z|[+-]\d{2}:?\d{2})?", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_S = datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc) - _EPOCH
_last_second: list[Any] = ["", 0]  # the recorder's receive times share their second: parse it once


def _iso_ns(text: str) -> int | None:
    """An ISO-8601 time as integer ns since the epoch (no zone means UTC); None if it is not one."""
    if len(text) == 27 and text[19] == "." and text[26] == "Z":  # the recorder's own "received"
        sec = text[:19]
        cached = _last_second
        if cached[0] != sec:
            try:
                cached[1] = calendar.timegm(datetime.fromisoformat(sec).timetuple())
            except ValueError:
                return None
            cached[0] = sec
        frac = text[20:26]
        if frac.isdigit():
            return int(cached[1]) * 1_000_000_000 + int(frac) * 1000
    m = _ISO.fullmatch(text)
    if m is None:
        return None
    day, clock, frac, zone = m.groups()
    try:
        t = datetime.fromisoformat(f"{day}T{clock or '00:00'}{'' if zone in (None, 'Z') else zone}")
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)  # A3CP times are UTC
    seconds = (t - _EPOCH) // _ONE_S
    return seconds * 1_000_000_000 + (int((frac or "0")[:9].ljust(9, "0")))


def parse_time(value: str | datetime | None, name: str) -> int | None:
    """A ``since``/``until`` bound as integer ns since the epoch (None stays None).

    Raises:
        ValueError: naming ``name``, when ``value`` is not an ISO-8601 time.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        t = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        delta = t - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    ns = _iso_ns(value) if isinstance(value, str) else None
    if ns is None:
        raise ValueError(f"{name}: {value!r} is not an ISO-8601 time (e.g. 2026-01-01T00:05:00Z)")
    return ns


# -- what is stored ------------------------------------------------------------------
class _Head(msgspec.Struct):
    """The fields of a record line that choose it and place it in time (the record is skipped)."""

    seq: int
    received: str = ""
    schema_type: str = ""
    timestamp: Any = None
    user_id: Any = None
    session_id: Any = None


class _Stored(msgspec.Struct):
    """One stored envelope with the record as its stored JSON bytes (``record``)."""

    seq: int
    received: str
    schema_type: str
    schema_version: Any = None
    record_id: Any = None
    timestamp: Any = None
    user_id: Any = None
    session_id: Any = None
    source: Any = None
    action_id: Any = None
    tags: Any = None
    producer: Any = None
    pseq: Any = None
    record: msgspec.Raw = msgspec.Raw(b"{}")


# Hashed lines end with ,"prev":"<64 hex>","h":"<64 hex>"}\n (docs/FORMAT.md, "The hash chain").
_HASH_SUFFIX = 147
_COMMIT = b',"commit":true'


@dataclass(slots=True)
class _Item:
    """One stored record on its way out: a journal line, or a row of a Parquet segment."""

    seq: int
    t: int | None  # the schedule's time of the record (ns), None if it has none
    schema_type: str
    line: bytes = b""  # journals: the line as stored
    hashing: bool = True
    row: dict[str, Any] | None = None  # Parquet: the envelope, rebuilt as read() does
    size: int = 0  # bytes of the file read since the previous record yielded from it (progress)

    def envelope(self) -> dict[str, Any]:
        """The envelope exactly as ``read`` yields it."""
        if self.row is not None:
            return self.row
        env: dict[str, Any] = msgspec.json.decode(self.line)
        return env

    def payload(self) -> bytes:
        """The envelope as JSON without the file's framing (commit, prev, h); the record's bytes as stored."""
        if self.row is not None:
            return msgspec.json.encode(self.row)
        body = self.line[:-_HASH_SUFFIX] if self.hashing else self.line[:-2]
        if body.endswith(_COMMIT):
            body = body[: -len(_COMMIT)]
        return body + b"}"

    def stored(self) -> _Stored:
        """The envelope with the record kept as its stored bytes."""
        if self.row is not None:
            return msgspec.convert({**self.row, "record": msgspec.Raw(msgspec.json.encode(self.row["record"]))},
                                   _Stored)
        return msgspec.json.decode(self.payload(), type=_Stored)


@dataclass
class _Filter:
    types: frozenset[str] | None
    user: str | None
    session: str | None
    lo: int | None
    hi: int | None
    by: By

    def keeps(self, stype: str, user: Any, session: Any) -> bool:
        return ((self.types is None or stype in self.types) and (self.user is None or user == self.user)
                and (self.session is None or session == self.session))

    def time_of(self, received: str, timestamp: Any) -> int | None:
        if self.by == "received":
            return _iso_ns(received)
        return _iso_ns(timestamp) if isinstance(timestamp, str) else None

    def in_window(self, t: int | None) -> bool:
        if self.lo is None and self.hi is None:
            return True
        return t is not None and (self.lo is None or t >= self.lo) and (self.hi is None or t < self.hi)

    def past(self, t: int | None) -> bool:
        """True once a file's records are past ``until`` for good: receive times only grow within a file."""
        return self.by == "received" and self.hi is not None and t is not None and t >= self.hi

    def segment_overlaps(self, m: dict[str, Any]) -> bool:
        """True if a manifest's type, users, sessions and time range (of ``by``) may hold matching records."""
        if "schema_type" in m:
            if not Segment(m).matches(None, None, self.user, self.session, None, None):
                return False
            if self.types is not None and m["schema_type"] not in self.types:
                return False
        lo, hi = (m.get("first_received"), m.get("last_received")) if self.by == "received" \
            else (m.get("first_timestamp"), m.get("last_timestamp"))
        first = _iso_ns(lo) if isinstance(lo, str) else None
        last = _iso_ns(hi) if isinstance(hi, str) else None
        if self.lo is not None and last is not None and last < self.lo:
            return False
        if self.hi is not None and first is not None and first >= self.hi:
            return False
        return True


@dataclass(order=True)
class _Source:
    first_seq: int
    path: Path = field(compare=False)
    first_t: int | None = field(default=None, compare=False)  # when it starts (the schedule's time), if known


def _line_before(f: BinaryIO, start: int, end: int) -> bytes:
    """The whole line that ends at ``end`` (a line end after ``start``), read backwards in blocks."""
    buf = b""
    pos = end
    while pos > start:
        k = max(start, pos - 65536)
        f.seek(k)
        buf = f.read(pos - k) + buf
        pos = k
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1:]
    return buf


def _journal_ends(path: Path) -> tuple[str | None, _Head | None, _Head | None]:
    """(schema type of the header, first and last committed record line) of a journal not in the catalog.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: the header or one of those lines is not what it should be.
    """
    with open(path, "rb") as f:
        head = msgspec.json.decode(f.readline())
        start = f.tell()
        first = f.readline()
        if not isinstance(head, dict) or not first.endswith(b"\n"):
            return None, None, None
        end = _committed_end(f, start, head.get("hash", "sha256") != "none")
        if end <= start:
            return None, None, None
        stype = head.get("schema_type")
        return (stype if isinstance(stype, str) else None), msgspec.json.decode(first, type=_Head), \
            msgspec.json.decode(_line_before(f, start, end), type=_Head)


def _parquet_first_seq(path: Path) -> int | None:
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        if pf.metadata.num_rows == 0:
            return None
        return int(pf.read_row_group(0, columns=["seq"]).column("seq")[0].as_py())


def _sources(root: Path, flt: _Filter) -> list[_Source]:
    """The data files that may hold matching records, by first ``seq``; sealed ones chosen by the catalog."""
    catalog = _catalog(root)
    found: list[_Source] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and INTERNAL_DIR in dirnames:
            dirnames.remove(INTERNAL_DIR)
        dirnames.sort()
        names = set(filenames)
        for f in sorted(filenames):
            if f.startswith(".") or not f.endswith((".jsonl", ".parquet")):
                continue
            journal = f[: -len(".parquet")] + ".jsonl" if f.endswith(".parquet") else f
            if f.endswith(".parquet") and journal in names:
                continue  # a kept journal holds the exact text: read it instead
            path = Path(dirpath, f)
            m = catalog.get(os.path.relpath(os.path.join(dirpath, journal), root))
            if m is not None:
                if flt.segment_overlaps(m) and m.get("first_seq") is not None:
                    first = m.get("first_received" if flt.by == "received" else "first_timestamp")
                    found.append(_Source(int(m["first_seq"]), path, _iso_ns(first) if isinstance(first, str) else None))
                continue
            if f.endswith(".parquet"):
                seq = _parquet_first_seq(path)
                if seq is not None:
                    found.append(_Source(seq, path))
                continue
            try:
                stype, first_line, last_line = _journal_ends(path)
            except (msgspec.DecodeError, msgspec.ValidationError):
                found.append(_Source(0, path))  # damaged: opened first, so reading it reports where
                continue
            if first_line is None or last_line is None or (flt.types is not None and stype not in flt.types):
                continue
            first_t = flt.time_of(first_line.received, first_line.timestamp)
            if flt.by == "received" and not flt.segment_overlaps({"first_received": first_line.received,
                                                                  "last_received": last_line.received}):
                continue  # receive times only grow within a file: its first and last line bound it
            found.append(_Source(first_line.seq, path, first_t))
    return sorted(found)


_COMMIT_HASHED = re.compile(rb',"commit":true,"prev":"[0-9a-f]{64}","h":"[0-9a-f]{64}"\}\n')
_COMMIT_PLAIN = b',"commit":true}\n'


def _committed_end(f: BinaryIO, start: int, hashing: bool) -> int:
    """Where the last line with a commit mark ends (``start`` if none), found from the file's tail.

    A line was acknowledged if a commit mark follows it, so everything before
    this offset is a whole, committed batch and can be handed out line by
    line, without holding a batch back until its commit line is read (which
    would make the first record of each batch late by the whole batch's read).
    The mark is recognised in the bytes: only the framing puts
    ``,"commit":true`` right before a line's fixed-shape end.
    """
    pos = os.fstat(f.fileno()).st_size
    buf = b""
    while pos > start:
        k = max(start, pos - 65536)
        f.seek(k)
        buf = f.read(pos - k) + buf
        pos = k
        if hashing:
            ends = [m.end() for m in _COMMIT_HASHED.finditer(buf)]
            if ends:
                return pos + ends[-1]
        else:
            i = buf.rfind(_COMMIT_PLAIN)
            if i >= 0:
                return pos + i + len(_COMMIT_PLAIN)
    return start


def _bisect(f: BinaryIO, lo: int, hi: int, since: int) -> int:
    """A line start at or before the first line received at or after ``since``, found in O(log n) lines.

    Receive times only grow within a journal (one thread stamps them in
    ``seq`` order), so a seek into a long journal skips what lies before.
    ``lo`` stays the start of a line received before ``since`` (or the first).
    """
    while hi - lo > 65536:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline()  # to the next line start
        pos = f.tell()
        line = f.readline()
        try:
            t = _iso_ns(msgspec.json.decode(line, type=_Head).received) if pos < hi else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            t = None  # reported where the scan meets it
        if t is not None and t < since:
            lo = pos
        else:
            hi = mid
    return lo


def _journal_items(path: Path, flt: _Filter) -> Iterator[_Item]:
    """Matching records of one journal that a commit mark covers (the lines ``read`` yields)."""
    with open(path, "rb") as f:
        header = f.readline()
        if not header.endswith(b"\n"):
            return
        try:
            hashing = msgspec.json.decode(header).get("hash", "sha256") != "none"
        except (msgspec.DecodeError, AttributeError) as e:
            raise CorruptionError(str(path), 1, 0, f"header is not a JSON object: {e}") from e
        offset = len(header)
        end = _committed_end(f, offset, hashing)
        if flt.by == "received" and flt.lo is not None:
            offset = _bisect(f, offset, end, flt.lo)
        f.seek(offset)
        consumed = offset
        for n, line in enumerate(f, 2):
            if offset >= end:
                return  # lines after the last commit mark were never acknowledged
            try:
                h = msgspec.json.decode(line, type=_Head)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                raise CorruptionError(str(path), n, offset, f"not a record line: {e}") from e
            offset += len(line)
            consumed += len(line)
            t = flt.time_of(h.received, h.timestamp)
            if flt.past(t):
                return
            if flt.keeps(h.schema_type, h.user_id, h.session_id) and flt.in_window(t):
                yield _Item(h.seq, t, h.schema_type, line, hashing, size=consumed)
                consumed = 0


def _parquet_items(path: Path, flt: _Filter) -> Iterator[_Item]:
    """Matching rows of one Parquet segment as envelopes, a few rows at a time."""
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        types = {fl.name: fl.type for fl in pf.schema_arrow}
        per_row = os.fstat(f.fileno()).st_size // max(1, pf.metadata.num_rows)
        consumed = 0
        for batch in pf.iter_batches(batch_size=16):  # small steps: a row's conversion costs tens of µs
            for row in batch.to_pylist():
                consumed += per_row
                e = {k: _py(v, types[k]) for k, v in row.items()}
                t = flt.time_of(e["received"], e.get("timestamp"))
                if flt.past(t):
                    return
                if not (flt.keeps(e["schema_type"], e.get("user_id"), e.get("session_id")) and flt.in_window(t)):
                    continue
                rec = e.get("record")
                if isinstance(rec, dict):
                    extra = rec.pop("_extra", None)
                    if isinstance(extra, str):
                        rec.update(msgspec.json.decode(extra))
                    e["record"] = {k: v for k, v in rec.items() if v is not None}
                yield _Item(int(e["seq"]), t, e["schema_type"], row=e, size=consumed)
                consumed = 0


class _Merge:
    """The sources merged by ``seq``; each is opened when the merge reaches its first ``seq``, or
    earlier through ``prefetch`` (a Parquet file takes milliseconds to open: better in a long wait)."""

    def __init__(self, sources: list[_Source], flt: _Filter) -> None:
        self.pending = list(reversed(sources))  # pop() gives the lowest first_seq
        self.heap: list[tuple[int, int, _Item, Iterator[_Item]]] = []
        self.flt = flt
        self.n = 0

    def _open(self, index: int) -> None:
        src = self.pending.pop(index)
        it = _parquet_items(src.path, self.flt) if src.path.suffix == ".parquet" else _journal_items(src.path, self.flt)
        first = next(it, None)
        if first is not None:
            self.n += 1
            heapq.heappush(self.heap, (first.seq, self.n, first, it))

    def prefetch(self, horizon: int | None, parquet: bool = False, slack_ns: int | None = None) -> bool:
        """Open the earliest unopened source that starts before ``horizon`` (None: any; ``parquet``: only
        Parquet ones) and can be opened within ``slack_ns`` (None: any time); False if there is none."""
        for i in range(len(self.pending) - 1, -1, -1):
            src = self.pending[i]
            is_parquet = src.path.suffix == ".parquet"
            if parquet and not is_parquet:
                continue
            if horizon is not None and (src.first_t is None or src.first_t > horizon):
                continue
            if slack_ns is not None and slack_ns < (_OPEN_PARQUET_NS if is_parquet else _OPEN_JOURNAL_NS):
                return False  # the earliest one due does not fit in this wait: no later one jumps ahead of it
            self._open(i)
            return True
        return False

    def next(self) -> _Item | None:
        """The record with the lowest ``seq`` left, or None."""
        heap = self.heap
        while self.pending and (not heap or self.pending[-1].first_seq <= heap[0][0]):
            self._open(len(self.pending) - 1)
        if not heap:
            return None
        _seq, k, item, it = heap[0]
        nxt = next(it, None)  # read ahead now, while there is time before this record is due
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (nxt.seq, k, nxt, it))
        return item


# -- the schedule ---------------------------------------------------------------------
class Clock(Protocol):
    """What replay needs of a clock: the time, and a wait until a time (integer ns)."""

    def now_ns(self) -> int: ...

    def sleep_until(self, deadline_ns: int) -> None: ...


_LOOKAHEAD_NS = 500_000_000  # files that start within this much playback ahead are opened early ...
_OPEN_JOURNAL_NS = 2_000_000  # ... one per wait long enough to open it: a journal takes ~0.2 ms ...
_OPEN_PARQUET_NS = 20_000_000  # ... and a Parquet file a few ms (its first row group decoded)
_PR_SET_TIMERSLACK = 29
_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274, "arm64": 274, "riscv64": 274}.get(platform.machine())
_tuned = threading.local()


class _SchedAttr(ctypes.Structure):
    """``struct sched_attr`` of sched_setattr(2)."""

    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


def _tune_thread(slice_ns: int | None) -> None:
    """Once per waiting thread (Linux): 1 ns of timer slack instead of 50 µs, and, for a normal thread,
    a short EEVDF time slice (``sched_runtime``, Linux >= 6.12, unprivileged), so a thread waking at its
    deadline preempts CPU-bound work instead of waiting out its slice (milliseconds on a busy machine)."""
    if getattr(_tuned, "done", False) or not sys.platform.startswith("linux"):
        return
    _tuned.done = True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
        if slice_ns and _SYS_SCHED_SETATTR is not None and os.sched_getscheduler(0) == os.SCHED_OTHER:
            attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=os.SCHED_OTHER, sched_nice=os.nice(0),
                              sched_runtime=slice_ns)
            libc.syscall(_SYS_SCHED_SETATTR, 0, ctypes.byref(attr), 0)  # older kernels ignore or refuse it
    except (OSError, AttributeError):
        pass


class SystemClock:
    """``time.monotonic_ns``, and waits tuned for lateness in the tens of µs.

    A wait sleeps until ``spin_ns`` before the deadline, then polls the
    clock (``spin_ns`` of CPU per record buys the tens of µs a sleep wakes
    late); the first wait of a thread asks Linux for fine timer slack and a
    ``slice_ns`` scheduler slice (see ``_tune_thread``). ``spin_ns=0`` only
    sleeps; ``slice_ns=None`` leaves the thread's scheduling alone.
    """

    def __init__(self, spin_ns: int = 50_000, slice_ns: int | None = 100_000) -> None:
        self.spin_ns = spin_ns
        self.slice_ns = slice_ns

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, deadline_ns: int) -> None:
        _tune_thread(self.slice_ns)
        while True:
            left = deadline_ns - time.monotonic_ns()
            if left <= 0:
                return
            if left > self.spin_ns:
                time.sleep((left - self.spin_ns) / 1e9)


class SimulatedClock:
    """A clock that moves only when waited on (or ``advance``d): replays run in simulated time."""

    def __init__(self, start_ns: int = 0) -> None:
        self.t = start_ns

    def now_ns(self) -> int:
        return self.t

    def sleep_until(self, deadline_ns: int) -> None:
        self.t = max(self.t, deadline_ns)

    def advance(self, ns: int) -> None:
        """Let ``ns`` pass, as work between two records would."""
        self.t += ns


class ScheduleStats:
    """Schedule error (actual minus intended emission time, ns) of every record played.

    Keeps up to ``keep`` samples exactly, then a uniform sample of that size
    (reservoir), so percentiles stay cheap for recordings of any length; the
    count and the maximum are always exact.
    """

    def __init__(self, keep: int = 1_000_000) -> None:
        self.keep = keep
        self.count = 0
        self.max_ns = 0
        self.samples: array[int] = array("q")
        self._rng = random.Random(0)

    def add(self, error_ns: int) -> None:
        """Count one record's error."""
        self.count += 1
        if error_ns > self.max_ns:
            self.max_ns = error_ns
        if len(self.samples) < self.keep:
            self.samples.append(error_ns)
        else:
            i = self._rng.randrange(self.count)
            if i < self.keep:
                self.samples[i] = error_ns

    def percentiles(self, ps: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
        """``{"p50": ms, ..., "max": ms}``; empty without samples."""
        if not self.samples:
            return {}
        s = sorted(self.samples)
        out = {f"p{p:g}": s[min(len(s) - 1, int(len(s) * p / 100))] / 1e6 for p in ps}
        out["max"] = self.max_ns / 1e6
        return out


class Replay:
    """An iterator of stored envelopes, each released at its original offset divided by ``speed``.

    Made by ``replay()``. After each record, ``intended_ns`` is the clock
    time it was due at (to measure lateness at the point of sending) and
    ``stats`` holds the schedule error of every record so far. ``frames()``
    gives ``(schema type, JSON bytes)`` instead of dicts, for senders.
    """

    def __init__(self, root: str | Path, *, types: str | Iterable[str] | None = None, user: str | None = None,
                 session: str | None = None, since: str | datetime | None = None,
                 until: str | datetime | None = None, speed: float | None = 1.0, clock: Clock | None = None,
                 by: By = "received") -> None:
        if speed is not None and not (isinstance(speed, (int, float)) and speed > 0):
            raise ValueError(f"speed: {speed!r} must be a positive number (or None: no waiting)")
        if by not in ("received", "timestamp"):
            raise ValueError(f"by: {by!r} must be 'received' or 'timestamp'")
        self.root = Path(root)
        if not self.root.is_dir():
            raise RecorderError(f"{root}: not a directory (a data root, or a directory below one)")
        chosen = frozenset([types] if isinstance(types, str) else types) if types is not None else None
        lo, hi = parse_time(since, "since"), parse_time(until, "until")
        self._filter = _Filter(chosen, user, session, lo, hi, by)
        self.speed = speed
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stats = ScheduleStats()
        self.intended_ns = 0
        self.count = 0
        #: the time (``by``) of the latest record played, ns since the epoch
        self.position_ns: int | None = None
        self._sources = _sources(self.root, self._filter)
        self.files = [s.path for s in self._sources]
        self._merge = _Merge(self._sources, self._filter)
        if speed is not None and self._sources:
            # Before the schedule starts: pyarrow's first file (~0.1 s), and whatever starts within the lookahead.
            self._merge.prefetch(None, parquet=True)
            starts = [s.first_t for s in self._sources if s.first_t is not None]
            horizon = min(starts) + round(_LOOKAHEAD_NS * speed) if starts else None
            while horizon is not None and self._merge.prefetch(horizon):
                pass
        self._base: int | None = None  # the time of the first timed record
        self._start = 0
        self._offset = 0

    def __iter__(self) -> Replay:
        return self

    def __next__(self) -> dict[str, Any]:
        item = self._next_item()
        if item is None:
            raise StopIteration
        return item.envelope()

    def frames(self, record_only: bool = False) -> Iterator[tuple[str, bytes]]:
        """``(schema type, envelope JSON without framing)`` per record on schedule; ``record_only``:
        the record's stored bytes instead of the envelope."""
        for item in iter(self._next_item, None):
            yield item.schema_type, (bytes(item.stored().record) if record_only else item.payload())

    def _next_item(self) -> _Item | None:
        """The next record, released on schedule; None at the end (recheck reads through this too)."""
        item = self._merge.next()
        if item is None:
            return None
        self.count += 1
        t = item.t
        if t is not None:
            self.position_ns = t
        if self.speed is None:
            return item
        now = self.clock.now_ns()
        if self._base is None:
            self._start = now
            if t is not None:
                self._base = t
        elif t is not None:
            span = t - self._base
            # Records leave in recorder order: a time earlier than the one before
            # (another producer's clock, a stepped wall clock) leaves at once.
            self._offset = max(self._offset, span if self.speed == 1 else round(span / self.speed))
        self.intended_ns = self._start + self._offset
        if self._merge.pending and t is not None:  # open a file due soon in this wait, if it fits
            self._merge.prefetch(t + round(_LOOKAHEAD_NS * self.speed), slack_ns=self.intended_ns - now)
        self.clock.sleep_until(self.intended_ns)
        self.stats.add(self.clock.now_ns() - self.intended_ns)
        return item


def replay(root: str | Path, *, types: str | Iterable[str] | None = None, user: str | None = None,
           session: str | None = None, since: str | datetime | None = None, until: str | datetime | None = None,
           speed: float | None = 1.0, clock: Clock | None = None, by: By = "received") -> Replay:
    """Play a recording back: stored envelopes in recorder order, at their original pace or faster.

    Records come in the order ``read`` yields them (by ``seq``), across the
    chosen types. Each is released at its offset from the first record's
    time, divided by ``speed``; the time is the receive time, or with
    ``by="timestamp"`` the record's own ``timestamp`` (a record without
    one, or with one earlier than the record before it, leaves at once).

    Args:
        root: a data root (or a directory below one).
        types: a schema type, or several; None for every type.
        user: only this ``user_id``.
        session: only this ``session_id``.
        since: only records whose time (``by``) is at or after this ISO-8601
            time (no zone: UTC); sealed segments that end earlier are not opened.
        until: only records whose time is before this one.
        speed: 1.0 plays at the recorded pace, 10 ten times faster; None
            does not wait at all.
        clock: where time comes from and waits happen (``SimulatedClock``
            in tests); default ``SystemClock()``.
        by: ``"received"`` (the recorder's receive time) or ``"timestamp"``.

    Returns:
        A ``Replay``: iterate it for envelope dicts (as ``read`` yields them);
        its ``stats`` hold the schedule error of each record.

    Raises:
        ValueError: ``speed``, ``by``, ``since`` or ``until`` is not valid.
        RecorderError: ``root`` is not a directory.
        CorruptionError: a whole line in the middle of a file is not a record.
    """
    return Replay(root, types=types, user=user, session=session, since=since, until=until, speed=speed,
                  clock=clock, by=by)
