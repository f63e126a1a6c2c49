"""The order readers give: each producer's records in ``pseq`` order, ``seq`` ordering the rest.

``seq`` is the recorder's acceptance order, but after a crash a record that
was dispatched and lost is sent again and takes a new, higher ``seq`` than
later records of its producer that were already durable in another file.
Readers therefore do not yield plain ``seq`` order. The rule
(docs/FORMAT.md, "Read order"), over the records one read yields:

- a record is *late* if a record of the same producer with a lower ``seq``
  has a higher ``pseq``;
- a record ``r`` is released at ``K(r)``: the highest ``seq`` among ``r``
  and the late records of its producer with a lower ``pseq`` than ``r``
  (``K(r) = seq(r)`` for almost every record);
- records come in ``(K, pseq)`` order. ``K`` never decreases along a
  producer's ``pseq``, so each producer's records come in ``pseq`` order, and
  records of different producers keep their ``seq`` order, except that a
  record held back comes right after the late record that released it.

Records without a producer order (``pseq`` 0 or absent, as ``Store.record``
writes for producer ``inproc``; a ``pseq`` that is not a positive integer)
are never late and never held: ``K = seq``.

A reader finds the late records with one light pass (``seq``, ``producer``,
``pseq`` and the filter fields of each record, in ``seq`` order), then
merges by ``seq`` and holds back only records whose ``K`` lies ahead. What
is held is bounded by the producer, not by the recording: the records of a
producer between a lost record's first dispatch and its resend, all of
them unacknowledged at the crash (at most the client's ``max_pending``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import msgspec

__all__ = ["Late", "LineKeys", "late_records", "reorder", "permutation"]

T = TypeVar("T")
#: (seq, producer, pseq) of one record
Key = tuple[int, Any, Any]
#: producer -> its late records as (seq, pseq), in ``seq`` order
Late = dict[str, list[tuple[int, int]]]


class LineKeys(msgspec.Struct, kw_only=True):
    """The fields of a record line, besides ``seq``, that readers order and filter it by (the record is skipped)."""

    timestamp: Any = None
    user_id: Any = None
    session_id: Any = None
    producer: Any = None
    pseq: Any = None


def _ordered(producer: Any, pseq: Any) -> bool:
    """True if the record has a producer order (a producer id and a positive integer pseq)."""
    return type(pseq) is int and pseq > 0 and isinstance(producer, str)


def late_records(keys: Iterable[Key]) -> Late:
    """The late records among ``keys``, which must come in ``seq`` order.

    Memory: one integer per producer, plus the late records themselves.
    """
    highest: dict[str, int] = {}
    late: Late = {}
    for seq, producer, pseq in keys:
        if not _ordered(producer, pseq):
            continue
        top = highest.get(producer)
        if top is None or pseq > top:
            highest[producer] = pseq
        elif pseq < top:
            late.setdefault(producer, []).append((seq, pseq))
    return late


class _Pending:
    """One producer's late records still ahead of the merge, with suffix minima of their pseqs."""

    __slots__ = ("seqs", "pseqs", "floor", "i")

    def __init__(self, records: list[tuple[int, int]]) -> None:
        self.seqs = [s for s, _ in records]
        self.pseqs = [p for _, p in records]
        self.floor = self.pseqs[:]  # floor[i]: the lowest pseq of records i.. (stops a scan early)
        for i in range(len(self.floor) - 2, -1, -1):
            self.floor[i] = min(self.floor[i], self.floor[i + 1])
        self.i = 0

    def release(self, seq: int, pseq: int) -> int:
        """K of a record at ``seq`` with ``pseq``: the last late record ahead of it with a lower pseq, or itself."""
        seqs, pseqs, floor = self.seqs, self.pseqs, self.floor
        i, n = self.i, len(seqs)
        while i < n and seqs[i] <= seq:
            i += 1
        self.i = i
        k = seq
        while i < n and floor[i] < pseq:
            if pseqs[i] < pseq:
                k = seqs[i]
            i += 1
        return k


def reorder(items: Iterable[T], key: Callable[[T], Key], late: Late) -> Iterator[T]:
    """``items`` (in ``seq`` order) in read order: each held back until the record that releases it.

    A held record whose releasing record never comes (a file that changed
    between the two passes) leaves in ``(K, pseq)`` order once the merge
    passes its ``K``, or at the end.
    """
    if not late:
        yield from items
        return
    pending = {p: _Pending(v) for p, v in late.items()}
    held: list[tuple[int, int, int, T]] = []  # (K, pseq, arrival, item)
    n = 0
    for item in items:
        seq, producer, pseq = key(item)
        while held and held[0][0] < seq:
            yield heapq.heappop(held)[3]
        ahead = pending.get(producer) if _ordered(producer, pseq) else None
        k = ahead.release(seq, pseq) if ahead is not None else seq
        if k > seq:
            n += 1
            heapq.heappush(held, (k, pseq, n, item))
        else:
            yield item
        while held and held[0][0] == seq:
            yield heapq.heappop(held)[3]
    while held:
        yield heapq.heappop(held)[3]


def permutation(keys: list[Key]) -> list[int]:
    """The read order of records given as keys in ``seq`` order, as indices into ``keys``."""
    late = late_records(keys)
    return list(reorder(range(len(keys)), keys.__getitem__, late))
