"""A small progress line on stderr for long work (verify, export, benchmarks)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Redraws ``label  42%  12.3 MB/s`` at most ten times a second.

    On a terminal it redraws one line; elsewhere (CI logs) it prints a line
    per tenth of the work, so logs stay short.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, unit: str = "B") -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled
        self.unit = unit
        self.done_n = 0
        self.start = time.monotonic()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.printed_tenth = -1

    def advance(self, n: int) -> None:
        """Count ``n`` more units of work done."""
        self.done_n += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty and now - self.last >= 0.1:
            self.last = now
            sys.stderr.write("\r" + self._line(now))
            sys.stderr.flush()
        elif not self.tty:
            tenth = 10 * self.done_n // self.total
            if tenth > self.printed_tenth:
                self.printed_tenth = tenth
                sys.stderr.write(self._line(now) + "\n")

    def _line(self, now: float) -> str:
        pct = 100 * self.done_n / self.total
        rate = self.done_n / max(now - self.start, 1e-9)
        if self.unit == "B":
            return f"{self.label}: {pct:5.1f}%  {self.done_n / 1e6:.1f}/{self.total / 1e6:.1f} MB  {rate / 1e6:.1f} MB/s"
        return f"{self.label}: {pct:5.1f}%  {self.done_n}/{self.total} {self.unit}  {rate:.0f} {self.unit}/s"

    def done(self) -> None:
        """Finish the line."""
        if self.enabled and self.tty:
            sys.stderr.write("\r" + self._line(time.monotonic()) + "\n")
            sys.stderr.flush()
