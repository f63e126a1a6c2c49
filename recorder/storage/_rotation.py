"""Segments of one type's streams: which one each stream writes, when it is full, what a new one chains from.

A stream's records go to its current segment until it is full
(``rotate_records``, ``rotate_bytes``, ``rotate_age_s``), then to the next;
each segment's header names the chain head of the one before it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from . import _durable, formats
from ._active import ActiveFiles
from ._routing import Routes
from ._segfiles import stored_head
from ._split import fitting
from .catalog import MANIFEST_SUFFIX, TOMBSTONE_SUFFIX
from .journal import GENESIS, Journal
from ..schema.registry import TypeSpec

__all__ = ["Rotation"]


class Rotation:
    """The current segment and last closed head of every stream of one type, and its size limits."""

    def __init__(self, spec: TypeSpec, routes: Routes, root_fd: int, active: ActiveFiles) -> None:
        cfg = spec.config
        self.rotate_bytes, self.rotate_records = cfg.rotate_bytes, cfg.rotate_records
        self.rotate_age, self.idle = cfg.rotate_age_s, cfg.session_idle_s
        self.hashing = spec.hashing
        self.format = formats.get(cfg.format)
        self.routes = routes
        self.root_fd = root_fd
        self.active = active
        self.current: dict[str, int] = {}  # stream -> segment being written
        self.prev_heads: dict[str, tuple[int, str]] = {}  # stream -> (segment, chain head) of its last closed one

    def segment(self, stream: str) -> int:
        """The segment ``stream`` writes now (looked up on disk the first time since start)."""
        seg = self.current.get(stream)
        if seg is None:
            seg = self.current[stream] = self._find(stream)
        return seg

    def advance(self, stream: str, segment: int) -> None:
        """The stream's next record goes past ``segment`` (never back: a later one may be written already)."""
        self.current[stream] = max(self.current.get(stream, 0), segment + 1)

    def move_on(self, stream: str, seg: int, head: str) -> tuple[str, int | None, tuple[int, str] | None]:
        """The stream goes on in segment ``seg + 1``, chained from ``head``; returns what undoes it (``restore``)."""
        undo = (stream, self.current.get(stream), self.prev_heads.get(stream))
        self.prev_heads[stream] = (seg, head)
        self.current[stream] = seg + 1
        return undo

    def closed(self, stream: str, seg: int, head: str) -> None:
        """Segment ``seg`` of the stream was closed with chain head ``head``: the next record starts a later one."""
        self.prev_heads[stream] = (seg, head)
        self.advance(stream, seg)

    def full(self, j: Journal, opened: float, now: float) -> bool:
        """True if the segment ``j`` (opened at monotonic ``opened``) reached a limit."""
        return bool((self.rotate_bytes and j.size >= self.rotate_bytes)
                    or (self.rotate_records and j.records >= self.rotate_records)
                    or (self.rotate_age and j.records and now - opened >= self.rotate_age))

    def fitting(self, bodies: Sequence[bytes], start: int, j: Journal) -> int:
        """How many of ``bodies[start:]`` the segment ``j`` still takes (0: full)."""
        return fitting(bodies, start, j.records, j.size, self.rotate_records, self.rotate_bytes, self.hashing)

    def restore(self, stream: str, seg: int | None, head: tuple[int, str] | None) -> None:
        """Put a stream's current segment and last head back to what they were before a failed batch."""
        if seg is None:
            self.current.pop(stream, None)
        else:
            self.current[stream] = seg
        if head is None:
            self.prev_heads.pop(stream, None)
        else:
            self.prev_heads[stream] = head

    def prev_head(self, stream: str, segment: int, dir_fd: int, open_journals: Mapping[str, Journal]) -> str:
        """The chain head of the stream's previous segment: from memory, its open journal, or its files."""
        known = self.prev_heads.get(stream)
        if known is not None and known[0] == segment - 1:
            return known[1]
        prev_rel = self.routes.journal_rel(stream, segment - 1)
        j = open_journals.get(prev_rel)
        if j is not None:
            return j.head  # still open (reopened at start): its recovered head, newer than any checkpoint
        return stored_head(dir_fd, formats.stem(prev_rel.rsplit("/", 1)[-1])) or GENESIS

    def _find(self, stream: str) -> int:
        """The segment to write for a stream seen for the first time since start."""
        d, _, name = stream.rpartition("/")
        pre, post = name.split("\0", 1)
        stem_post = post.rsplit(".", 1)[0]
        dir_fd = _durable.open_dirs(self.root_fd, d.split("/") if d else [], d)
        try:
            names = os.listdir(dir_fd)
        finally:
            _durable.close(dir_fd)
        best = -1
        for n in names:
            if n.startswith(pre) and n[len(pre):len(pre) + 1].isdigit():
                rest = n[len(pre):]
                k = 0
                while k < len(rest) and rest[k].isdigit():
                    k += 1
                if rest[k:].startswith(stem_post):
                    best = max(best, int(rest[:k]))
        if best < 0:
            return 0
        stem = (d + "/" if d else "") + pre + self.routes.seg_text(best) + stem_post
        base, fmt = stem.rsplit("/", 1)[-1], self.format
        done = {base + MANIFEST_SUFFIX, base + TOMBSTONE_SUFFIX} | ({fmt.data_name(base)} if fmt.converts else set())
        sealed = not done.isdisjoint(names)
        sealing = self.active.files.get(stem + formats.JOURNAL_SUFFIX) == "sealing"
        return best + 1 if sealed or sealing else best
