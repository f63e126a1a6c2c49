"""One JSONL journal file: batch append, tail recovery, cut-back (the framing and chain are in ``chain``).

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import _durable
from .chain import FORMAT_VERSION, GENESIS, check_line, read_anchor, read_checkpoint, scan_tail, seal_line
from ..exceptions import CorruptionError, RecorderError

__all__ = ["EventSink", "Journal", "Recovery", "check_line", "seal_line", "open_journal", "GENESIS",
           "FORMAT_VERSION"]

EventSink = Callable[[str, dict[str, Any]], None]
_COMMIT_TAIL = b',"commit":true'


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
            anchor = read_anchor(read_checkpoint(self.name, self.dir_fd), self.label) if self.hashing else None
            scan = scan_tail(rfd, size, self.hashing, self.label, anchor)
            rec = Recovery(damaged=scan.damaged, tail=scan.tail)
            self.records = max(0, scan.lines - 1)
            if scan.damaged is not None:
                return rec
            if scan.head is not None:
                self.head = str(scan.head.get("h", GENESIS))
                self.last_seq = int(scan.head.get("seq", 0))
            if scan.good_end < size:
                rec.cut_offset = scan.good_end
                rec.cut_bytes = os.pread(rfd, size - scan.good_end, scan.good_end)
                if self.keep_cut is not None:
                    self.keep_cut(scan.good_end, rec.cut_bytes)  # kept first: a crash here loses nothing
                _durable.truncate(self.fd, scan.good_end, self.label)
            return rec
        finally:
            os.close(rfd)

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
        """Cut the file back to its last synced size (``cut_back``): the next batch chains from the old head."""
        self.cut_back()

    def cut_back(self, size: int | None = None, *, close: bool = False) -> None:
        """Cut the file back to ``size`` bytes (default: its last synced size) through a new descriptor, durably.

        After a failed write or fdatasync what the file holds past that point
        is unknown (and the page cache may lie after EIO); it was never
        acknowledged, so it goes. The unsynced batch is forgotten. Cut to its
        last synced size the journal goes on from its old head; cut further
        back (part of a batch was synced), or with ``close``, its descriptor
        is closed without a checkpoint, and reopening recovers the file.
        """
        target = self.synced_size if size is None else size
        self._pending = None  # head, size and records only ever advance once a batch is synced
        try:
            fd = os.open(self.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
            try:
                _durable.truncate(fd, target, self.label)
            finally:
                _durable.close(fd)
        finally:
            if (close or target != self.synced_size) and self.fd >= 0:
                _durable.close(self.fd)
                self.fd = -1

    @property
    def pending(self) -> bool:
        """True while a batch is written but not yet synced (``write`` done, ``sync`` not)."""
        return self._pending is not None

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


def open_journal(dir_fd: int, name: str, rel: str, header: dict[str, Any], on_event: EventSink, *,
                 hashing: bool, fsync: bool, prev_head: str = GENESIS) -> tuple[Journal, Recovery]:
    """Open a journal, recovering its tail; a damaged file is set aside read-only.

    What recovery cut and what was set aside are reported through ``on_event``
    (the cut bytes with them, so they are kept, never silently deleted).
    """
    def keep(offset: int, data: bytes) -> None:
        on_event("torn_tail_cut", {"path": rel, "offset": offset, "bytes": len(data), "data": data})

    j = Journal(dir_fd, name, rel, hashing=hashing, fsync=fsync)
    rec = j.open(header, prev_head, keep_cut=keep)
    if rec.damaged is not None:
        _durable.close(j.fd)
        aside = f"{name}.damaged-{time.time_ns()}"
        _durable.rename(dir_fd, name, aside, rel, read_only=True)
        on_event("file_set_aside", {"path": rel, "moved_to": aside, "offset": rec.damaged.offset,
                                    "line": rec.damaged.line, "reason": rec.damaged.reason})
        j = Journal(dir_fd, name, rel, hashing=hashing, fsync=fsync)
        rec2 = j.open({**header, "follows_damaged": aside}, prev_head)
        rec = Recovery(damaged=rec.damaged, tail=rec2.tail)
    return j, rec
