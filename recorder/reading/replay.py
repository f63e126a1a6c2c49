"""Play a recording back in recorder order, on its original schedule or faster.

``replay()`` merges the chosen files in read order (the order ``read``
yields: by ``seq``, each producer by ``pseq``) and holds each record back
until its original offset from the first one, divided by ``speed``. Files are chosen and skipped with the catalog and the
manifests' time ranges, and opened only when the merge reaches them, so
seeking into a long recording reads only what overlaps the window
(``recorder.reading._replay_files``). This module holds the clocks and the pacing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import random
import sys
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ._replay_files import By, Filter, Item, Merge, find_sources, late_index, parse_time
from ..exceptions import RecorderError, UsageError

__all__ = ["Clock", "Replay", "ScheduleStats", "SimulatedClock", "SystemClock", "replay", "parse_time"]


# -- the schedule ---------------------------------------------------------------------
class Clock(Protocol):
    """What replay needs of a clock: the time, and a wait until a time (integer ns)."""

    def now_ns(self) -> int: ...

    def sleep_until(self, deadline_ns: int) -> None: ...


_LOOKAHEAD_NS = 500_000_000  # files that start within this much playback ahead are opened early, one per wait
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

    Raises:
        UsageError: (a ValueError) ``speed`` or ``by`` is not valid.
        ValueError: ``since`` or ``until`` is not an ISO-8601 time.
        RecorderError: ``root`` is not a directory.
    """

    def __init__(self, root: str | Path, *, types: str | Iterable[str] | None = None, user: str | None = None,
                 session: str | None = None, since: str | datetime | None = None,
                 until: str | datetime | None = None, speed: float | None = 1.0, clock: Clock | None = None,
                 by: By = "received") -> None:
        if speed is not None and not (isinstance(speed, (int, float)) and speed > 0):
            raise UsageError("speed", f"{speed!r} must be a positive number (or None: no waiting)")
        if by not in ("received", "timestamp"):
            raise UsageError("by", f"{by!r} must be 'received' or 'timestamp'")
        self.root = Path(root)
        if not self.root.is_dir():
            raise RecorderError(f"{root}: not a directory (a data root, or a directory below one)")
        chosen = frozenset([types] if isinstance(types, str) else types) if types is not None else None
        lo, hi = parse_time(since, "since"), parse_time(until, "until")
        self._filter = Filter(chosen, user, session, lo, hi, by)
        self.speed = speed
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stats = ScheduleStats()
        self.intended_ns = 0
        self.count = 0
        #: the time (``by``) of the latest record played, ns since the epoch
        self.position_ns: int | None = None
        self._sources = find_sources(self.root, self._filter)
        self.files = [s.path for s in self._sources]
        self._merge = Merge(self._sources, self._filter, late_index(self._sources, self._filter))
        if speed is not None and self._sources:
            # Before the schedule starts: pyarrow's first file (~0.1 s), and whatever starts within the lookahead.
            self._merge.prefetch(None, converted_only=True)
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

    def _next_item(self) -> Item | None:
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

    Records come in the order ``read`` yields them (by ``seq``, each
    producer by ``pseq``: docs/FORMAT.md, "Read order"), across the
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
        UsageError: (a ValueError) ``speed`` or ``by`` is not valid.
        ValueError: ``since`` or ``until`` is not an ISO-8601 time.
        RecorderError: ``root`` is not a directory.
        CorruptionError: a whole line in the middle of a file is not a record.
    """
    return Replay(root, types=types, user=user, session=session, since=since, until=until, speed=speed,
                  clock=clock, by=by)
