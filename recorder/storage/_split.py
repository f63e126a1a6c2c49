"""Where a batch meets a segment's size limits: how many of its lines the segment still takes.

A segment never holds more than ``rotate_records`` records, nor more than
``rotate_bytes`` bytes (header included) unless one record alone needs more
room than that; the writer cuts a batch at that boundary and goes on in the
next segment. The byte count is exact: it follows the journal's framing
(docs/FORMAT.md, "The hash chain").
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["COMMIT", "fitting", "line_bytes"]

#: ``,"commit":true``, on the last line of every batch written to a file
COMMIT = 14
#: bytes a line adds to its body: ``,"prev":"<64 hex>",`` + ``"h":"<64 hex>"}`` + newline (hashed), ``}`` + newline
_FRAMING = {True: 147, False: 2}


def line_bytes(body: bytes, hashing: bool, last: bool = False) -> int:
    """The length of the line a body (an open JSON object) becomes in a journal."""
    return len(body) + _FRAMING[hashing] + (COMMIT if last else 0)


def fitting(bodies: Sequence[bytes], start: int, records: int, size: int, max_records: int, max_bytes: int,
            hashing: bool) -> int:
    """How many of ``bodies[start:]`` a segment holding ``records`` records in ``size`` bytes still takes.

    Args:
        bodies: the batch's line bodies for this stream, in order.
        start: the first body not yet written.
        records: record lines the segment holds already.
        size: the segment's size in bytes, header included.
        max_records: ``rotate_records`` (0: no limit).
        max_bytes: ``rotate_bytes`` (0: no limit).
        hashing: whether the journal is hash-chained (its framing is longer).

    Returns:
        0 when the segment is full (it holds a record and the next one does
        not fit); else the count, at least 1 for an empty segment.
    """
    n = len(bodies) - start
    if max_records:
        n = min(n, max(0, max_records - records))
    if not max_bytes:
        return n
    framing = _FRAMING[hashing]
    fit = 0
    for i in range(start, start + n):
        line = len(bodies[i]) + framing
        if size + line + COMMIT > max_bytes and records + fit > 0:
            break  # the part's last line carries the commit mark: count it on the candidate
        size += line
        fit += 1
    return fit
