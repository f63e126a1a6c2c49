"""The writer of one schema type: owns that type's files, appends batches in order."""

from __future__ import annotations

import os
import time

import msgspec
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _durable
from ._env import iso_ns
from .exceptions import DurabilityError, StorageFull
from .journal import GENESIS, Journal, Recovery
from .registry import TypeSpec
from .validation import Accepted, safe_json

__all__ = ["Entry", "TypeWriter"]

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass(slots=True)
class Entry:
    """One accepted record with the numbers the recorder gave it."""

    accepted: Accepted
    seq: int
    received_ns: int
    producer: str
    pseq: int


def body(e: Entry) -> bytes:
    """The envelope of ``e`` as an open JSON object, ready for the journal to chain."""
    head = {"seq": e.seq, "received": iso_ns(e.received_ns), **e.accepted.fields,
            "producer": e.producer, "pseq": e.pseq}
    return b"".join((safe_json(head)[:-1], b',"record":', e.accepted.record))


class TypeWriter:
    """Appends entries of one schema type to the files its template names.

    Not thread-safe by design: one writer per type, driven by one thread, so
    the append order is the order of ``write`` calls.
    """

    def __init__(self, spec: TypeSpec, root_fd: int, header: dict[str, Any],
                 max_open: int, on_event: EventSink, state_fd: int) -> None:
        self.spec = spec
        self.root_fd = root_fd
        self.header = header
        self.max_open = max_open
        self.on_event = on_event
        self.open: OrderedDict[str, Journal] = OrderedDict()
        self.recovered: dict[str, Recovery] = {}
        # Files that may hold a torn tail or unacknowledged lines after a
        # crash: reopened (and so recovered) at start, kept in a state file.
        self.state_fd = state_fd
        self.state_name = f"active-{spec.name}.json"
        try:
            fd = os.open(self.state_name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=state_fd)
            try:
                self.active: set[str] = set(msgspec.json.decode(_read_all(fd)))
            finally:
                os.close(fd)
        except FileNotFoundError:
            self.active = set()

    def _save_active(self) -> None:
        _durable.write_new(self.state_fd, self.state_name, msgspec.json.encode(sorted(self.active)),
                           self.state_name)

    def reopen_active(self) -> list[dict[str, Any]]:
        """Open every file active before the last stop; returns their last whole lines."""
        tail: list[dict[str, Any]] = []
        for rel in sorted(self.active)[-self.max_open:]:
            self.journal(rel)
            tail.extend(self.recovered[rel].tail)
        return tail

    def path_for(self, entry: Entry) -> str:
        values: dict[str, Any] = dict(entry.accepted.path_values)
        if self.spec.template.fields & {"date", "year", "month", "day", "hour"}:
            from ._paths import date_fields

            values.update(date_fields(entry.received_ns))
        values.setdefault("segment", 0)
        return self.spec.template.render(values)

    def write(self, entries: list[Entry]) -> None:
        """Append ``entries`` in order: one write and one fdatasync per file touched.

        Raises:
            StorageFull: the disk is full; nothing of the failed file's batch is kept.
            DurabilityError: a write or sync failed; that batch is cut back.
        """
        groups: dict[str, list[bytes]] = {}
        last: dict[str, int] = {}
        for e in entries:
            rel = self.path_for(e)
            groups.setdefault(rel, []).append(body(e))
            last[rel] = e.seq
        for rel, bodies in groups.items():
            j = self.journal(rel)
            try:
                j.append(bodies)
            except (StorageFull, DurabilityError):
                self._cut_back(rel, j)
                raise
            j.last_seq = last[rel]

    def journal(self, rel: str) -> Journal:
        """The open journal of ``rel``, opening (and recovering) it if needed."""
        j = self.open.get(rel)
        if j is not None:
            self.open.move_to_end(rel)
            return j
        while len(self.open) >= self.max_open:
            old_rel, old = self.open.popitem(last=False)
            self._close(old)
            self.active.discard(old_rel)
        *dirs, name = rel.split("/")
        dir_fd = _durable.open_dirs(self.root_fd, dirs, rel)
        j = self._open_journal(dir_fd, name, rel)
        self.open[rel] = j
        if rel not in self.active:
            self.active.add(rel)
            self._save_active()
        return j

    def _open_journal(self, dir_fd: int, name: str, rel: str) -> Journal:
        header = {**self.header, "schema_type": self.spec.name, "path": rel,
                  "hash": self.spec.config.hash, "created": iso_ns(time.time_ns())}
        j, rec = open_journal(dir_fd, name, rel, header, self.on_event,
                              hashing=self.spec.hashing, fsync=self.spec.fsync)
        self.recovered[rel] = rec
        return j

    def _cut_back(self, rel: str, j: Journal) -> None:
        # What was written since the last good fdatasync is unknown (and on EIO
        # the page cache may lie), so cut it off through a new descriptor and
        # reopen; the failed batch was never acknowledged.
        self.open.pop(rel, None)
        _durable.close(j.fd)
        fd = os.open(j.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=j.dir_fd)
        try:
            _durable.truncate(fd, j.synced_size, rel)
        finally:
            _durable.close(fd)
        _durable.close(j.dir_fd)

    def _close(self, j: Journal) -> None:
        try:
            j.close()
        finally:
            _durable.close(j.dir_fd)

    def close(self) -> None:
        """Close every file, leaving a head checkpoint beside each."""
        while self.open:
            _, j = self.open.popitem()
            self._close(j)

    def heads(self) -> dict[str, tuple[int, str]]:
        """(size, head hash) of each open file: the anchors an acknowledgement vouches for."""
        return {rel: (j.size, j.head) for rel, j in self.open.items()}


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


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
