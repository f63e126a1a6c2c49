"""Recorder sequence numbers that only grow, across restarts too (``_recorder/state/seq``)."""

from __future__ import annotations

import os

from . import INTERNAL_DIR, _durable

__all__ = ["SeqLease"]

_LEASE = 1_000_000  # sequence numbers reserved per durable lease write


class SeqLease:
    """Hands out recorder sequence numbers under a durable lease.

    A lease (the highest number that may be used) is written durably before
    numbers up to it are handed out, so a restart continues above it.
    """

    def __init__(self, dir_fd: int) -> None:
        self.dir_fd = dir_fd
        try:
            fd = os.open("seq", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                last = int(os.read(fd, 64).decode() or 0)
            finally:
                os.close(fd)
        except FileNotFoundError:
            last = 0
        self.next = last + 1
        self.limit = last
        self._extend()

    def _extend(self) -> None:
        self.limit = self.next + _LEASE
        _durable.write_new(self.dir_fd, "seq", str(self.limit).encode(), f"{INTERNAL_DIR}/state/seq")

    def take(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive numbers; returns the first."""
        first = self.next
        self.next += n
        if self.next > self.limit:
            self._extend()
        return first
