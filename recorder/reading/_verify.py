"""Verify one journal line by line (the chain check recovery uses), and the problem a check reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._progress import Progress
from ..exceptions import CorruptionError
from ..storage.chain import ChainCheck, check_header, check_line, frame, read_anchor, read_checkpoint

__all__ = ["Problem", "verify_file"]


@dataclass
class Problem:
    """The first problem found in one file."""

    path: str
    line: int  # 1-based; -1 where the problem is not in one line (a manifest, a Parquet file)
    offset: int  # byte offset in the file; -1 where no single byte is at fault
    reason: str
    where: str = ""  # the place when it is not a line: "field sha256", "row group 2", "whole file"

    def __str__(self) -> str:
        if self.line >= 1:
            place = f"line {self.line}" + (f" (byte {self.offset})" if self.offset >= 0 else "")
        elif self.offset >= 0:
            place = f"byte {self.offset}"
        else:
            place = self.where
        return f"{self.path}: {place}: {self.reason}" if place else f"{self.path}: {self.reason}"


def _problem(e: CorruptionError) -> Problem:
    return Problem(e.path, e.line, e.offset, e.reason)


def verify_file(path: str | Path, progress: Progress | None = None) -> Problem | None:
    """Check one journal's header, every line's hash, the chain, order and head checkpoint."""
    path = str(path)
    check: ChainCheck | None = None
    last_seq = 0
    committed = True
    n, start = 0, 0
    with open(path, "rb") as f:
        for start, body, whole in frame(f.fileno()):
            n += 1
            if progress:
                progress.advance(len(body) + whole)
            if not whole:
                return Problem(path, n, start, f"torn final line ({len(body)} bytes without a newline)")
            if check is None:
                hashing, reason = check_header(body)
                if reason:
                    return Problem(path, 1, 0, reason)
                anchor = read_anchor(read_checkpoint(path), path) if hashing else None
                check = ChainCheck(path, hashing, anchor)
            bad = check.add(body)
            if bad is not None:
                return _problem(bad)
            obj, reason = check_line(body, False)
            if obj is None:
                return Problem(path, n, start, reason)
            if not check.hashing and ("h" in obj or "prev" in obj):
                return Problem(path, n, start, "line carries a hash chain in a journal whose header says 'none'")
            if n > 1:
                seq = obj.get("seq")
                if not isinstance(seq, int) or seq <= last_seq:
                    return Problem(path, n, start, f"sequence {seq!r} does not increase (previous {last_seq})")
                last_seq = seq
            committed = obj.get("commit") is True
    if check is None:
        return Problem(path, 1, 0, "empty file (no header)")
    if not committed:
        return Problem(path, n, start, "final batch is incomplete (its last line has no commit mark)")
    bad = check.finish()
    return _problem(bad) if bad is not None else None
