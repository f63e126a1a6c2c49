"""Which stored records a replay yields, in recorder order: the time window, the files, the merge.

Data files are chosen and skipped with the catalog and the manifests' (or a
journal's first and last lines') time ranges, opened only when the merge by
``seq`` reaches them, and a journal is entered by bisection at ``since``.
"""

from __future__ import annotations

import calendar
import heapq
import os
import re
from collections.abc import Iterator
from operator import itemgetter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

from ._order import Key, Late, LineKeys, late_records, reorder
from ..storage import formats
from ..storage.catalog import Segment, sealed_segments
from ..exceptions import CorruptionError
from .reader import walk_data_files

By = Literal["received", "timestamp"]

# What opening a file costs, so that a wait opens one only when it fits (see ``Merge.prefetch``).
_OPEN_JOURNAL_NS = 2_000_000  # a journal takes ~0.2 ms ...
_OPEN_CONVERTED_NS = 20_000_000  # ... and a converted (Parquet) file a few ms (its first row group decoded)

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
class _Head(LineKeys, kw_only=True):
    """The fields of a record line that choose it and place it in time (the record is skipped)."""

    seq: int
    received: str = ""
    schema_type: str = ""


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
class Item:
    """One stored record on its way out: a journal line, or a row of a Parquet segment."""

    seq: int
    t: int | None  # the schedule's time of the record (ns), None if it has none
    schema_type: str
    line: bytes = b""  # journals: the line as stored
    hashing: bool = True
    row: dict[str, Any] | None = None  # Parquet: the envelope, rebuilt as read() does
    size: int = 0  # bytes of the file read since the previous record yielded from it (progress)
    producer: Any = None
    pseq: Any = None

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
class Filter:
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


def find_sources(root: Path, flt: Filter) -> list[_Source]:
    """The data files that may hold matching records, by first ``seq``; sealed ones chosen by the catalog."""
    catalog = sealed_segments(root)
    found: list[_Source] = []
    for path, rel in walk_data_files(root):
        m = catalog.get(rel)
        if m is not None:
            if flt.segment_overlaps(m) and m.get("first_seq") is not None:
                first = m.get("first_received" if flt.by == "received" else "first_timestamp")
                found.append(_Source(int(m["first_seq"]), path, _iso_ns(first) if isinstance(first, str) else None))
            continue
        fmt = formats.for_path(path)
        if fmt.converts:
            with open(path, "rb") as f:
                seq = fmt.first_seq(f)
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


def _journal_items(path: Path, flt: Filter) -> Iterator[Item]:
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
                yield Item(h.seq, t, h.schema_type, line, hashing, size=consumed, producer=h.producer, pseq=h.pseq)
                consumed = 0


def _converted_items(path: Path, flt: Filter) -> Iterator[Item]:
    """Matching rows of one converted (Parquet) segment as envelopes, a few rows at a time."""
    fmt = formats.for_path(path)
    with open(path, "rb") as f:
        per_row = os.fstat(f.fileno()).st_size // max(1, fmt.count(f))
        consumed = 0
        for e in fmt.rows(f, batch_size=16):  # small steps: a row's conversion costs tens of µs
            consumed += per_row
            t = flt.time_of(e["received"], e.get("timestamp"))
            if flt.past(t):
                return
            if not (flt.keeps(e["schema_type"], e.get("user_id"), e.get("session_id")) and flt.in_window(t)):
                continue
            yield Item(int(e["seq"]), t, e["schema_type"], row=e, size=consumed, producer=e.get("producer"),
                       pseq=e.get("pseq"))
            consumed = 0


def _converted_keys(path: Path, flt: Filter) -> Iterator[Key]:
    """(seq, producer, pseq) of the rows ``_converted_items`` yields, from a few columns (no row conversion)."""
    names = ["seq", "received", "schema_type", "timestamp", "user_id", "session_id", "producer", "pseq"]
    cols = formats.for_path(path).read(path, columns=names).to_pydict()
    for seq, received, stype, ts, user, session, producer, pseq in zip(*(cols[c] for c in names)):
        t = parse_time(received if flt.by == "received" else ts, "time")  # datetimes (or None): never raises
        if flt.past(t):
            return
        if flt.keeps(stype, user, session) and flt.in_window(t):
            yield int(seq), producer, pseq


def late_index(sources: list[_Source], flt: Filter) -> Late:
    """The late records among what a merge of ``sources`` yields (``recorder.reading._order``): one light pass."""
    def keys(src: _Source) -> Iterator[Key]:
        if formats.for_path(src.path).converts:
            return _converted_keys(src.path, flt)
        return ((i.seq, i.producer, i.pseq) for i in _journal_items(src.path, flt))

    return late_records(heapq.merge(*map(keys, sources), key=itemgetter(0)))


class Merge:
    """The sources merged by ``seq``, then put in read order (``recorder.reading._order``); each is opened when
    the merge reaches its first ``seq``, or earlier through ``prefetch`` (a Parquet file takes
    milliseconds to open: better in a long wait)."""

    def __init__(self, sources: list[_Source], flt: Filter, late: Late | None = None) -> None:
        self.pending = list(reversed(sources))  # pop() gives the lowest first_seq
        self.heap: list[tuple[int, int, Item, Iterator[Item]]] = []
        self.flt = flt
        self.n = 0
        self._out = reorder(iter(self._next_by_seq, None), _item_key, late or {})

    def _open(self, index: int) -> None:
        src = self.pending.pop(index)
        converted = formats.for_path(src.path).converts
        it = _converted_items(src.path, self.flt) if converted else _journal_items(src.path, self.flt)
        first = next(it, None)
        if first is not None:
            self.n += 1
            heapq.heappush(self.heap, (first.seq, self.n, first, it))

    def prefetch(self, horizon: int | None, converted_only: bool = False, slack_ns: int | None = None) -> bool:
        """Open the earliest unopened source that starts before ``horizon`` (None: any; ``converted_only``:
        only converted data files, e.g. Parquet) and can be opened within ``slack_ns`` (None: any time);
        False if there is none."""
        for i in range(len(self.pending) - 1, -1, -1):
            src = self.pending[i]
            converted = formats.for_path(src.path).converts
            if converted_only and not converted:
                continue
            if horizon is not None and (src.first_t is None or src.first_t > horizon):
                continue
            if slack_ns is not None and slack_ns < (_OPEN_CONVERTED_NS if converted else _OPEN_JOURNAL_NS):
                return False  # the earliest one due does not fit in this wait: no later one jumps ahead of it
            self._open(i)
            return True
        return False

    def next(self) -> Item | None:
        """The next record in read order (``recorder.reading._order``), or None."""
        return next(self._out, None)

    def _next_by_seq(self) -> Item | None:
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


def _item_key(item: Item) -> Key:
    return item.seq, item.producer, item.pseq
