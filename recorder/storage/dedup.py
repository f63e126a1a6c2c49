"""Which producer sequence numbers are durable: exact restart de-duplication, for any outage.

Per producer the recorder keeps the pseqs it has made durable as sorted,
merged intervals (one interval for a producer whose records all landed;
a rejected or lost pseq splits it). One producer writes to several types,
so pseq 10 may be durable while 9 was lost: the highest pseq alone would
not do. The ingest loop adds each batch's records when the batch is
reported durable and writes a checkpoint (``state/producers.json``) at
most every ``CHECKPOINT_S``, with ``upto``: every durable record with a
recorder seq up to it is in the checkpoint. At start the checkpoint is
loaded and the journals written since (the active files of every type)
are read back from their end down to ``upto``, so nothing durable is
missed however long ago it was acknowledged.

Bounded: producers not heard of for ``TTL_S`` (or more than
``MAX_PRODUCERS``, the least recent first) are dropped, and a producer
keeps at most ``MAX_INTERVALS`` intervals (the lowest go first); a resend
of a dropped pseq would be written again.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_right

import msgspec

from . import INTERNAL_DIR, _durable

__all__ = ["CHECKPOINT_S", "DurableIndex", "MAX_INTERVALS", "MAX_PRODUCERS", "TTL_S"]

CHECKPOINT_S = 1.0  # the loop writes the index at most this often (when it changed)
TTL_S = 30 * 86400.0  # producers not heard of for 30 days are forgotten
MAX_PRODUCERS = 100_000
MAX_INTERVALS = 1024
_NAME = "producers.json"


class _Doc(msgspec.Struct):
    upto: int  # every durable record with seq <= upto is in ``producers``
    producers: dict[str, tuple[float, list[tuple[int, int]]]]  # id -> (last seen, intervals)


class DurableIndex:
    """Durable pseqs per producer, as merged inclusive intervals."""

    def __init__(self) -> None:
        self.intervals: dict[str, list[list[int]]] = {}
        self.seen: dict[str, float] = {}
        self.upto = 0
        self.dirty = False
        self.loaded = False  # a checkpoint was read at start
        self.start_s = 0.0  # seconds the start took: the checkpoint and the files read back

    # -- updates -------------------------------------------------------------
    def add(self, producer: str, pseq: int) -> None:
        """``pseq`` of ``producer`` is durable (called in order of the batches, one record at a time)."""
        iv = self.intervals.get(producer)
        self.dirty = True
        if iv is None:
            self.intervals[producer] = [[pseq, pseq]]
            self.seen[producer] = time.time()
            return
        last = iv[-1]
        if last[1] + 1 == pseq:  # the common case: the next one
            last[1] = pseq
            return
        if last[1] < pseq:
            iv.append([pseq, pseq])
            if len(iv) > MAX_INTERVALS:
                del iv[0]
            return
        self._insert(iv, pseq)

    @staticmethod
    def _insert(iv: list[list[int]], pseq: int) -> None:
        i = bisect_right(iv, [pseq, 2**63]) - 1  # the interval starting at or before pseq
        if i >= 0 and iv[i][0] <= pseq <= iv[i][1]:
            return
        if i >= 0 and iv[i][1] + 1 == pseq:
            iv[i][1] = pseq
        elif i + 1 < len(iv) and iv[i + 1][0] - 1 == pseq:
            iv[i + 1][0] = pseq
        else:
            iv.insert(i + 1, [pseq, pseq])
            return
        j = i if iv[i][1] == pseq else i + 1  # merge with the neighbour it now touches
        if 0 <= j and j + 1 < len(iv) and iv[j][1] + 1 >= iv[j + 1][0]:
            iv[j][1] = max(iv[j][1], iv[j + 1][1])
            del iv[j + 1]
        elif j > 0 and iv[j - 1][1] + 1 >= iv[j][0]:
            iv[j - 1][1] = max(iv[j - 1][1], iv[j][1])
            del iv[j]

    def touch(self, producer: str) -> None:
        """The producer was heard of (keeps it from expiring)."""
        if producer in self.intervals:
            self.seen[producer] = time.time()

    # -- queries -------------------------------------------------------------
    def of(self, producer: str) -> list[list[int]]:
        """The durable intervals of ``producer`` (empty if none)."""
        return self.intervals.get(producer, [])

    @staticmethod
    def covers(iv: list[list[int]], pseq: int) -> bool:
        i = bisect_right(iv, [pseq, 2**63]) - 1
        return i >= 0 and iv[i][0] <= pseq <= iv[i][1]

    def summary(self) -> dict[str, float | int]:
        """For ``recorder stats``: how big the index is and what the last start cost."""
        return {"producers": len(self.intervals), "intervals": sum(len(v) for v in self.intervals.values()),
                "checkpoint_upto": self.upto, "start_s": round(self.start_s, 4)}

    # -- persistence -----------------------------------------------------------
    def prune(self, now: float) -> None:
        old = [p for p, t in self.seen.items() if now - t > TTL_S]
        if len(self.seen) - len(old) > MAX_PRODUCERS:
            keep = sorted(self.seen, key=self.seen.__getitem__)[-MAX_PRODUCERS:]
            old = list(set(self.seen) - set(keep))
        for p in old:
            self.intervals.pop(p, None)
            self.seen.pop(p, None)
            self.dirty = True

    def save(self, state_fd: int, upto: int) -> None:
        """Write the checkpoint atomically: every durable record with seq <= ``upto`` is in it."""
        self.prune(time.time())
        doc = _Doc(upto, {p: (round(self.seen.get(p, 0.0), 3), [(a, b) for a, b in iv])
                          for p, iv in self.intervals.items()})
        _durable.write_new(state_fd, _NAME, msgspec.json.encode(doc), f"{INTERNAL_DIR}/state/{_NAME}")
        self.upto = upto
        self.dirty = False

    @classmethod
    def load(cls, state_fd: int) -> DurableIndex:
        """The last checkpoint (an empty index with ``upto`` 0 when there is none or it is unreadable)."""
        idx = cls()
        try:
            fd = os.open(_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=state_fd)
        except FileNotFoundError:
            return idx
        try:
            with os.fdopen(fd, "rb") as f:
                doc = msgspec.json.decode(f.read(), type=_Doc)
        except (msgspec.DecodeError, OSError):
            return idx  # the tails read at start still find the last batches
        idx.upto = doc.upto
        idx.loaded = True
        for p, (seen, iv) in doc.producers.items():
            idx.intervals[p] = [[a, b] for a, b in iv]
            idx.seen[p] = seen
        return idx
