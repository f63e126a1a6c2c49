"""One JSONL journal file: line framing, hash chain, batch append, tail recovery.

Layout (docs/FORMAT.md has the full rules). With hashing on, every line is

    {<fields...>,"prev":"<hash of previous line>","h":"<hash of this line>"}\\n

where ``h`` is sha256 over the line's bytes up to and including the comma
before ``"h"``. The last line of each appended batch carries
``"commit":true``; recovery cuts an incomplete final batch back to the last
commit line, and refuses to cut anything else.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import _durable
from ..exceptions import CorruptionError, RecorderError

__all__ = ["Journal", "Recovery", "check_line", "GENESIS", "FORMAT_VERSION"]

FORMAT_VERSION = 1
GENESIS = "0" * 64
_SUFFIX = len(b'"h":"') + 64 + len(b'"}')  # bytes after the hashed prefix
_COMMIT = b'"commit":true,'
_COMMIT_TAIL = b',"commit":true'
_CHUNK = 1 << 20
_DEDUP_BATCHES = 4  # whole batches kept in Recovery.tail for the router's de-duplication


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


def _check_chained(line: bytes, prev: bytes) -> tuple[str, bytes]:
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
class Recovery:
    """What opening an existing journal found and did."""

    cut_offset: int = -1  # where a torn final batch was cut, -1 if none
    cut_bytes: bytes = b""
    damaged: CorruptionError | None = None  # set when the file was set aside
    tail: list[dict[str, Any]] = field(default_factory=list)  # last whole lines seen


class Journal:
    """Appends chained lines to one file; the single writer of that file."""

    def __init__(self, dir_fd: int, name: str, label: str, *, hashing: bool, fsync: bool) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.label = label
        self.hashing = hashing
        self.fsync = fsync
        self.fd = -1
        self.head = GENESIS
        self.size = 0
        self.last_seq = 0
        self.synced_size = 0
        self.records = 0  # lines after the header
        self._pending: tuple[str, int, int] | None = None  # written, not yet synced: (head, bytes, lines)
        self.prev_head = GENESIS
        self.keep_cut: Callable[[int, bytes], None] | None = None

    # -- opening -------------------------------------------------------
    def open(self, header: dict[str, Any], prev_head: str = GENESIS,
             keep_cut: Callable[[int, bytes], None] | None = None) -> Recovery:
        """Open (creating or recovering) the file; returns what recovery did.

        Args:
            header: fields of the header line written to a new file.
            prev_head: the chain head this file continues (the previous
                segment's), written as the header's ``prev``.
            keep_cut: called with (offset, bytes) before a torn tail is cut,
                so the bytes are kept before they leave the file.
        """
        self.prev_head = prev_head
        self.keep_cut = keep_cut
        fd, created = _durable.open_append(self.dir_fd, self.name, self.label)
        self.fd = fd
        size = os.fstat(fd).st_size
        rec = Recovery()
        if not created and size > 0:
            rec = self._recover(size)
            if rec.damaged is not None:
                return rec  # caller sets the file aside and opens a fresh one
            self.size = size if rec.cut_offset < 0 else rec.cut_offset
            if self.size > 0:
                self.synced_size = self.size
                return rec
        self._write_header(header)
        return rec

    def _write_header(self, header: dict[str, Any]) -> None:
        # A checkpoint left beside an empty or new file belongs to a file that
        # is gone (set aside or cut to nothing): it must not vouch for this one.
        _durable.unlink(self.dir_fd, self.name + ".head", self.label + ".head")
        body = msgspec.json.encode({"recorder_journal": FORMAT_VERSION, **header})[:-1]
        line, h = seal_line(body, self.prev_head, self.hashing, commit=True)
        _durable.append(self.fd, line, self.label)
        _durable.sync(self.fd, self.label)
        self.head, self.size, self.synced_size = h, len(line), len(line)

    def _recover(self, size: int) -> Recovery:
        rfd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        try:
            return self._scan_tail(rfd, size)
        finally:
            os.close(rfd)

    def _scan_tail(self, rfd: int, size: int) -> Recovery:
        start = max(0, size - _CHUNK)
        while True:
            data = os.pread(rfd, size - start, start)
            lines = data.split(b"\n")
            partial = lines.pop()  # bytes after the last newline: a torn line or b""
            offsets, pos = [], start
            for ln in lines:
                offsets.append(pos)
                pos += len(ln) + 1
            first = 0 if start == 0 else 1  # a chunk's first line may be cut
            commit_at = -1
            parsed: list[dict[str, Any] | None] = [None] * len(lines)
            for i in range(len(lines) - 1, first - 1, -1):
                obj, _ = check_line(lines[i], self.hashing)
                parsed[i] = obj
                if obj is not None and obj.get("commit") is True:
                    commit_at = i
                    break
            # Enough tail for de-duplication too: the last few whole batches
            # (their acknowledgements may not have left before a crash).
            if start == 0 or (commit_at >= 0 and data.count(b'"commit":true') > _DEDUP_BATCHES):
                break
            start = max(0, start - _CHUNK)
        rec = Recovery()
        good_end = offsets[commit_at] + len(lines[commit_at]) + 1 if commit_at >= 0 else 0
        # Everything up to the last commit was acknowledged: any damage there
        # (or a checkpoint it no longer matches) sets the file aside.
        n_committed, bad = self._check_committed(rfd, good_end)
        self.records = max(0, n_committed - 1)
        if bad is not None:
            rec.damaged = bad
            return rec
        # Classify what follows the last commit line: only a torn batch may be cut.
        prev = parsed[commit_at].get("h", "") if commit_at >= 0 else GENESIS  # type: ignore[union-attr]
        for i in range(commit_at + 1, len(lines)):
            obj = parsed[i] if parsed[i] is not None else check_line(lines[i], self.hashing)[0]
            if b"\0" in lines[i]:
                break  # zero-filled blocks: the tail of an unfinished write
            if obj is None or (self.hashing and obj.get("prev") != prev):
                rec.damaged = CorruptionError(
                    self.label, n_committed + i - commit_at, offsets[i],
                    "a whole line after the last commit is damaged",
                )
                return rec
            prev = obj.get("h", "")
        if commit_at >= 0:
            head_obj = parsed[commit_at]
            assert head_obj is not None
            self.head = str(head_obj.get("h", GENESIS))
            self.last_seq = int(head_obj.get("seq", 0))
            for i in range(first, commit_at):  # whole lines before the head, for de-duplication
                if parsed[i] is None:
                    parsed[i] = check_line(lines[i], self.hashing)[0]
            rec.tail = [o for o in parsed[first : commit_at + 1] if o is not None]
        if good_end < size:
            rec.cut_offset = good_end
            rec.cut_bytes = os.pread(rfd, size - good_end, good_end)
            if self.keep_cut is not None:
                self.keep_cut(good_end, rec.cut_bytes)  # kept first: a crash here loses nothing
            _durable.truncate(self.fd, good_end, self.label)
        del partial
        return rec

    def _check_committed(self, rfd: int, end: int) -> tuple[int, CorruptionError | None]:
        """Check every line in ``[0, end)`` and the head checkpoint; returns (lines, first problem)."""
        anchor = self._read_anchor() if self.hashing else None
        if isinstance(anchor, CorruptionError):
            return 0, anchor

        prev, n, offset, pos, rest = GENESIS.encode(), 0, 0, 0, b""
        vouched = anchor is None
        while pos < end:
            chunk = os.pread(rfd, min(_CHUNK, end - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for ln in parts:
                n += 1
                if n == 1 and self.hashing:
                    prev = ln[:-_SUFFIX][-66:-2]  # the header continues whatever chain it names
                reason, h = _check_chained(ln, prev) if self.hashing else (check_line(ln, False)[1], b"")
                if reason:
                    return n, CorruptionError(self.label, n, offset, reason)
                prev = h
                offset += len(ln) + 1
                if anchor is not None and offset == anchor[0]:
                    if h != anchor[1]:
                        return n, CorruptionError(self.label, n, offset - len(ln) - 1,
                                                  "the line the head checkpoint vouches for was changed")
                    vouched = True
        if not vouched:
            assert anchor is not None
            return n, CorruptionError(self.label, n + 1, offset,
                                      f"the head checkpoint vouches for {anchor[0]} bytes but the committed "
                                      f"lines end at byte {offset}: lines were removed")
        return n, None

    def _read_anchor(self) -> tuple[int, bytes] | CorruptionError | None:
        """The (size, head) that the ``.head`` checkpoint beside the file vouches for, if any."""
        try:
            fd = os.open(self.name + ".head", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return None
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            obj = msgspec.json.decode(data)
            return int(obj["size"]), str(obj["head"]).encode()
        except (msgspec.DecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            return CorruptionError(self.label + ".head", 1, 0, "head checkpoint is unreadable")

    # -- appending -----------------------------------------------------
    def append(self, bodies: list[bytes]) -> None:
        """Append a batch of line bodies with one write and (fsync mode) one fdatasync.

        Each body is an open JSON object (``{...`` without the closing brace).
        The state (head, size) only advances once the batch is durable, so a
        failed batch leaves this object as it was before it.
        """
        try:
            self.write(bodies)
            self.sync()
        except RecorderError:
            self.rollback()
            raise

    def rollback(self) -> None:
        """Cut the file back to its last synced size through a new descriptor.

        After a failed write or fdatasync what the file holds past that point
        is unknown (and the page cache may lie after EIO); it was never
        acknowledged, so it goes, and the next batch chains from the old head.
        """
        self._pending = None
        fd = os.open(self.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        try:
            _durable.truncate(fd, self.synced_size, self.label)
        finally:
            os.close(fd)

    def write(self, bodies: list[bytes]) -> None:
        """The first half of ``append``: chain and write the batch, not yet synced.

        Lets a writer issue the fdatasyncs of several files at once (``sync``).
        """
        if not self.hashing:
            data = b"}\n".join(bodies) + b',"commit":true}\n'
        else:
            # each line's prefix in one join, then the whole batch in one more
            parts: list[bytes] = []
            head = self.head.encode()
            last = len(bodies) - 1
            for i, body in enumerate(bodies):
                prefix = b"".join((body, _COMMIT_TAIL if i == last else b"", b',"prev":"', head, b'",'))
                head = hashlib.sha256(prefix).hexdigest().encode()
                parts += (prefix, b'"h":"', head, b'"}\n')
            data = b"".join(parts)
        _durable.append(self.fd, data, self.label)
        self._pending = (head.decode() if self.hashing else "", len(data), len(bodies))

    def sync(self) -> None:
        """The second half of ``append``: fdatasync (fsync mode), then advance the state."""
        if self._pending is None:
            return
        if self.fsync:
            _durable.sync(self.fd, self.label)
        head, n, lines = self._pending
        self._pending = None
        self.head = head
        self.size += n
        self.synced_size = self.size
        self.records += lines

    def checkpoint(self) -> bytes:
        """The head anchor kept beside the file: the line ending at ``size`` hashes to ``head``."""
        return msgspec.json.encode({"size": self.size, "head": self.head, "seq": self.last_seq})

    def close(self) -> None:
        """Close the file, leaving a durable head checkpoint beside it.

        Raises:
            StorageFull, DurabilityError: the checkpoint could not be written
                (the file is closed all the same).
        """
        if self.fd < 0:
            return
        try:
            if self.hashing and self.size:
                _durable.write_new(self.dir_fd, self.name + ".head", self.checkpoint(), self.label)
        finally:
            _durable.close(self.fd)
            self.fd = -1
