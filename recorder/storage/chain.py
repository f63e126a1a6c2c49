"""The journal's line framing and hash chain: sealing a line, and the one check recovery and ``verify`` share.

Pure: nothing here writes. Files are read through descriptors the caller
opened (``os.pread``), so the read side checks a journal with the very rules
recovery applies, without the durability module. docs/FORMAT.md has the
layout ("The hash chain", "Recovery").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..exceptions import CorruptionError

__all__ = ["FORMAT_VERSION", "GENESIS", "Anchor", "ChainCheck", "TailScan", "check_header", "check_line",
           "frame", "read_anchor", "read_checkpoint", "scan_tail", "seal_line"]

FORMAT_VERSION = 1
GENESIS = "0" * 64
_SUFFIX = len(b'"h":"') + 64 + len(b'"}')  # bytes after the hashed prefix
_CHUNK = 1 << 20
_DEDUP_BATCHES = 4  # whole batches kept in TailScan.tail for the router's de-duplication


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal_line(body: bytes, prev: str, hashing: bool, commit: bool) -> tuple[bytes, str]:
    """Close an open JSON object ``body`` (``{...`` with fields) into a line.

    Returns the line (with newline) and its hash ('' when hashing is off).
    """
    tail = b',"commit":true' if commit else b""
    if not hashing:
        return body + tail + b"}\n", ""
    prefix = b"".join((body, tail, b',"prev":"', prev.encode(), b'",'))
    h = _hash(prefix)
    return b"".join((prefix, b'"h":"', h.encode(), b'"}\n')), h


def check_line(line: bytes, hashing: bool) -> tuple[dict[str, Any] | None, str]:
    """Parse one line (without its newline) and check its own hash.

    Returns (fields, reason): fields is None when the line is bad, and reason
    says why.
    """
    if hashing:
        if len(line) <= _SUFFIX or not line.endswith(b'"}') or line[-_SUFFIX:-66] != b'"h":"':
            return None, "line does not end with its hash field"
        if _hash(line[:-_SUFFIX]).encode() != line[-66:-2]:
            return None, "line hash mismatch (the line was altered)"
    try:
        obj = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        return None, f"not valid JSON: {e}"
    if not isinstance(obj, dict):
        return None, "line is not a JSON object"
    return obj, ""


def check_header(line: bytes) -> tuple[bool, str]:
    """(hashing, reason) of a journal's first line (without its newline); reason is '' when it is a header."""
    try:
        head = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        return True, f"header is not JSON: {e}"
    if not isinstance(head, dict) or head.get("recorder_journal") != FORMAT_VERSION:
        return True, "not a recorder journal (header lacks recorder_journal=1)"
    if head.get("hash") not in ("sha256", "none", None):
        return True, f"unknown hash algorithm {head.get('hash')!r}"
    hashing = head.get("hash", "sha256") != "none"
    chained = "h" in head or "prev" in head
    if not hashing and chained:
        return hashing, "header says hash 'none' but carries a hash chain: it was altered"
    if hashing and not chained:
        return hashing, "header lacks its hash fields"
    return hashing, ""


def frame(fd: int, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line without its newline, whole) of every line of ``fd`` in ``[start, end)`` (end: its size).

    Read with ``os.pread`` in 1 MiB steps; only the last line can lack its
    newline (``whole`` False): a torn line, or bytes past ``end``.
    """
    if end is None:
        end = os.fstat(fd).st_size
    pos, offset, rest = start, start, b""
    while pos < end:
        chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for ln in parts:
            yield offset, ln, True
            offset += len(ln) + 1
    if rest:
        yield offset, rest, False


def read_checkpoint(path: str, dir_fd: int | None = None) -> bytes | None:
    """The bytes of the ``.head`` checkpoint beside the journal ``path``, None if it has none.

    With ``dir_fd`` (a directory the recorder writes) a symlink is refused,
    as everywhere the recorder writes; a reader given a path follows it.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if dir_fd is not None else 0)
    try:
        fd = os.open(path + ".head", flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 1 << 16)  # a checkpoint is one short line
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Anchor:
    """What a ``.head`` checkpoint vouches for: the line ending at byte ``size`` has the hash ``head``."""

    size: int
    head: bytes


def read_anchor(data: bytes | None, label: str) -> Anchor | CorruptionError | None:
    """The checkpoint's (size, head) from its bytes; the problem if it is unreadable; None without one."""
    if data is None:
        return None
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        why = f"not JSON ({e})"
    else:
        if not isinstance(obj, dict):
            why = "not a JSON object"
        elif type(obj.get("size")) is not int or not isinstance(obj.get("head"), str):
            why = "it lacks an integer size and a head"
        else:
            return Anchor(obj["size"], obj["head"].encode())
    return CorruptionError(label + ".head", 1, 0, f"head checkpoint is unreadable: {why}")


@dataclass(slots=True)
class _Vouched:
    """The line a checkpoint points into: the first whose end reaches its size."""

    line: int
    start: int
    end: int
    h: bytes


class ChainCheck:
    """Checks a journal's lines in file order: each line's own hash and its link to the line before
    (``hash = "none"``: that it is a JSON object), and, at the end, what the checkpoint vouches for.

    The header's own ``prev`` is taken as it is (it continues the previous
    segment's chain, checked across segments).
    """

    def __init__(self, label: str, hashing: bool, anchor: Anchor | CorruptionError | None = None) -> None:
        self.label = label
        self.hashing = hashing
        self.anchor = anchor if hashing else None
        self.lines = 0  # lines checked
        self.end = 0  # where the last checked line ends
        self.prev = b""  # the ``h`` of the last checked line
        self._vouched: _Vouched | None = None

    def add(self, line: bytes) -> CorruptionError | None:
        """Check the next line (without its newline); the problem if it is bad."""
        self.lines += 1
        start = self.end
        self.end += len(line) + 1
        if not self.hashing:
            reason = check_line(line, False)[1]
            return CorruptionError(self.label, self.lines, start, reason) if reason else None
        if self.lines == 1:
            self.prev = line[:-_SUFFIX][-66:-2]  # the header continues whatever chain it names
        reason, h = _link(line, self.prev)
        if reason:
            return CorruptionError(self.label, self.lines, start, reason)
        self.prev = h
        a = self.anchor
        if self._vouched is None and isinstance(a, Anchor) and self.end >= a.size:
            self._vouched = _Vouched(self.lines, start, self.end, h)
        return None

    def finish(self) -> CorruptionError | None:
        """The checkpoint's verdict on the lines checked: the problem if it does not vouch for them."""
        a = self.anchor
        if a is None or isinstance(a, CorruptionError):
            return a
        v = self._vouched
        if v is None:
            return CorruptionError(self.label, self.lines + 1, self.end,
                                   f"the head checkpoint vouches for {a.size} bytes but the committed "
                                   f"lines end at byte {self.end}: lines were removed")
        if v.end != a.size or v.h != a.head:
            return CorruptionError(self.label, v.line, v.start, "the line the head checkpoint vouches for "
                                                                "is gone or changed")
        return None


def _link(line: bytes, prev: bytes) -> tuple[str, bytes]:
    """Check a line's own hash and its link to ``prev`` from its bytes alone.

    Returns (reason, hash): reason is '' when the line is good.
    """
    if len(line) < _SUFFIX + 75 or not line.endswith(b'"}') or line[-_SUFFIX:-66] != b'"h":"':
        return "line does not end with its hash field", b""
    prefix = line[:-_SUFFIX]
    h = _hash(prefix).encode()
    if h != line[-66:-2]:
        return "line hash mismatch (the line was altered)", b""
    if prefix[-75:-2] != b',"prev":"' + prev:
        return "chain broken: the line before it was removed or replaced", b""
    return "", h


@dataclass
class TailScan:
    """What recovery found in an existing journal (docs/FORMAT.md, "Recovery", steps 1-3)."""

    good_end: int = 0  # where the last whole commit line ends (0: there is none)
    lines: int = 0  # whole lines checked before a problem, or up to ``good_end``
    head: dict[str, Any] | None = None  # the last commit line
    tail: list[dict[str, Any]] = field(default_factory=list)  # whole lines up to it, for de-duplication
    damaged: CorruptionError | None = None  # damage: the file must be set aside, nothing cut


def scan_tail(fd: int, size: int, hashing: bool, label: str,
              anchor: Anchor | CorruptionError | None) -> TailScan:
    """Find the last commit line from the end, check everything before it and classify what follows.

    Whatever lies between ``good_end`` and ``size`` is a torn batch to cut
    (unless ``damaged`` is set).
    """
    start = max(0, size - _CHUNK)
    while True:
        data = os.pread(fd, size - start, start)
        lines = data.split(b"\n")
        lines.pop()  # bytes after the last newline: a torn line or b""
        offsets, pos = [], start
        for ln in lines:
            offsets.append(pos)
            pos += len(ln) + 1
        first = 0 if start == 0 else 1  # a chunk's first line may be cut
        commit_at = -1
        parsed: list[dict[str, Any] | None] = [None] * len(lines)
        for i in range(len(lines) - 1, first - 1, -1):
            obj, _ = check_line(lines[i], hashing)
            parsed[i] = obj
            if obj is not None and obj.get("commit") is True:
                commit_at = i
                break
        # Enough tail for de-duplication too: the last few whole batches
        # (their acknowledgements may not have left before a crash).
        if start == 0 or (commit_at >= 0 and data.count(b'"commit":true') > _DEDUP_BATCHES):
            break
        start = max(0, start - _CHUNK)
    scan = TailScan()
    scan.good_end = offsets[commit_at] + len(lines[commit_at]) + 1 if commit_at >= 0 else 0
    # Everything up to the last commit was acknowledged: any damage there
    # (or a checkpoint it no longer matches) sets the file aside.
    check = ChainCheck(label, hashing, anchor)
    for _offset, ln, _whole in frame(fd, 0, scan.good_end):
        scan.damaged = check.add(ln)
        if scan.damaged is not None:
            break
    scan.lines = check.lines
    scan.damaged = scan.damaged or check.finish()
    if scan.damaged is not None:
        return scan
    # Classify what follows the last commit line: only a torn batch may be cut.
    for i in range(commit_at + 1, len(lines)):
        if b"\0" in lines[i]:
            break  # zero-filled blocks: the tail of an unfinished write
        if check.add(lines[i]) is not None or check_line(lines[i], False)[0] is None:
            scan.damaged = CorruptionError(label, scan.lines + i - commit_at, offsets[i],
                                           "a whole line after the last commit is damaged")
            return scan
    if commit_at >= 0:
        scan.head = parsed[commit_at]
        for i in range(first, commit_at):  # whole lines before the head, for de-duplication
            if parsed[i] is None:
                parsed[i] = check_line(lines[i], hashing)[0]
        scan.tail = [o for o in parsed[first: commit_at + 1] if o is not None]
    return scan
