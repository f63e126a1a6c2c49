"""The state file of one writer: which of its files are open, sealing, or sealed lately.

A file that may hold a torn tail or unacknowledged lines after a crash is
"open"; one that still awaits its manifest or converted file is "sealing";
one sealed (or closed) lately is "recent <time>", since its last batch's
acknowledgement may not have left before a crash and the router must know
those records are on disk. All of them are reopened or resubmitted at start.
"""

from __future__ import annotations

import os
import queue
import time

import msgspec

from . import _durable
from ._segfiles import read_all

__all__ = ["ActiveFiles"]

_RECENT = 4  # sealed segments always kept for restart de-duplication ...
_RECENT_S = 120.0  # ... and every one sealed within this many seconds (across all streams)


class ActiveFiles:
    """``active-<type>.json`` under the state folder: journal path -> its state."""

    def __init__(self, state_fd: int, schema_type: str) -> None:
        self.fd = state_fd
        self.name = f"active-{schema_type}.json"
        self.files: dict[str, str] = {}
        self.recent: list[tuple[str, float]] = []  # (sealed segment, wall time) kept for de-duplication
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=state_fd)
            try:
                doc = msgspec.json.decode(read_all(fd))
            finally:
                os.close(fd)
            self.files = {r: "open" for r in doc} if isinstance(doc, list) else dict(doc)
        except FileNotFoundError:
            pass

    def save(self) -> None:
        """Replace the state file (whole or not at all)."""
        _durable.write_new(self.fd, self.name, msgspec.json.encode(dict(sorted(self.files.items()))), self.name)

    def to_recent(self, rel: str) -> None:
        """List ``rel`` as closed just now (saved with the next change)."""
        now = time.time()
        self.files[rel] = f"recent {now:.3f}"
        self.recent.append((rel, now))

    def drain(self, finished: queue.SimpleQueue[str]) -> None:
        """Sealed segments the sealer finished need no recovery at start; the last few stay "recent"."""
        changed = False
        while True:
            try:
                rel = finished.get_nowait()
            except queue.Empty:
                break
            if rel in self.files:
                self.to_recent(rel)
                changed = True
        cutoff = time.time() - _RECENT_S
        while len(self.recent) > _RECENT and self.recent[0][1] < cutoff:
            old, _t = self.recent.pop(0)
            if self.files.get(old, "").startswith("recent"):
                del self.files[old]
                changed = True
        if changed:
            self.save()
