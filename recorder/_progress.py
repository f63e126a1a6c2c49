"""A small progress line on stderr for long work (verify, export), drawn only on a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """Redraws ``label  42%  12.3 MB/s`` at most ten times a second.

    Only when stderr is a terminal: into a pipe, a file or a CI log it
    prints nothing, so the output of a command stays its result.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, unit: str = "B") -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.unit = unit
        self.done_n = 0
        self.start = time.monotonic()
        self.last = 0.0

    def advance(self, n: int) -> None:
        """Count ``n`` more units of work done."""
        self.done_n += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.last = now
            sys.stderr.write("\r" + self._line(now))
            sys.stderr.flush()

    def _line(self, now: float) -> str:
        pct = 100 * self.done_n / self.total
        rate = self.done_n / max(now - self.start, 1e-9)
        if self.unit == "B":
            return f"{self.label}: {pct:5.1f}%  {self.done_n / 1e6:.1f}/{self.total / 1e6:.1f} MB  {rate / 1e6:.1f} MB/s"
        return f"{self.label}: {pct:5.1f}%  {self.done_n}/{self.total} {self.unit}  {rate:.0f} {self.unit}/s"

    def done(self) -> None:
        """Finish the line."""
        if self.enabled:
            sys.stderr.write("\r" + self._line(time.monotonic()) + "\n")
            sys.stderr.flush()
