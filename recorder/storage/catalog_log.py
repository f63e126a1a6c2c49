"""The catalog of sealed segments, write side: append entries through a chained journal, rebuild from manifests.

The index and the replay are the read side's (``catalog``); this module adds
the durable log under ``_recorder/catalog.jsonl`` and its rebuild.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from . import INTERNAL_DIR, _durable
from .catalog import CATALOG_NAME, CatalogIndex, Segment, scan_manifests
from .journal import EventSink, Journal, open_journal

__all__ = ["Catalog", "rebuild"]


class Catalog(CatalogIndex):
    """In-memory index of sealed segments, persisted as a chained journal."""

    NAME = CATALOG_NAME

    def __init__(self, internal_fd: int, header: dict[str, Any], root: str, on_event: EventSink) -> None:
        super().__init__()
        self.internal_fd = internal_fd
        self.lock = threading.Lock()
        self.journal, rec = open_journal(internal_fd, self.NAME, f"{INTERNAL_DIR}/{self.NAME}",
                                         {**header, "schema_type": "catalog"}, on_event, hashing=True, fsync=True)
        if rec.damaged is None:
            self._load()
        else:
            # The catalog is derived data: a damaged one (set aside by
            # open_journal) is rebuilt from the manifests beside the segments.
            for kind, doc in scan_manifests(root):
                if kind == "seal":
                    self.add(doc.get("state") == "converted" and "convert" or "seal", doc)
                else:
                    self.add("delete", doc["manifest"], doc)
            on_event("catalog_rebuilt", {"entries": len(self.segments)})

    def _load(self) -> None:
        try:
            fd = os.open(self.NAME, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.internal_fd)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as f:
            self.load(f)

    def add(self, op: str, manifest: dict[str, Any], tombstone: dict[str, Any] | None = None) -> None:
        """Append one entry durably, then apply it to the index."""
        # a copy: callers go on changing their manifest (sealed -> converted)
        entry: dict[str, Any] = {"op": op, "manifest": msgspec.json.decode(msgspec.json.encode(manifest))}
        if tombstone is not None:
            entry["tombstone"] = tombstone
        with self.lock:
            self.journal.last_seq += 1
            body = msgspec.json.encode({"seq": self.journal.last_seq, **entry})[:-1]
            self.journal.append([body])
            self.apply(entry, self.journal.records + 1)

    def next_number(self) -> int:
        """The catalog number of the next segment to seal (one more than any seen, even if not yet added)."""
        with self.lock:
            self.max_number += 1
            return self.max_number

    def search(self, *, schema_type: str | None = None, version: str | None = None, user_id: str | None = None,
               session_id: str | None = None, since: datetime | None = None,
               until: datetime | None = None, include_deleted: bool = False) -> list[Segment]:
        """Sealed segments that may hold matching records, oldest first."""
        with self.lock:
            return super().search(schema_type=schema_type, version=version, user_id=user_id,
                                  session_id=session_id, since=since, until=until, include_deleted=include_deleted)

    def close(self) -> None:
        """Close the log, leaving its head checkpoint."""
        self.journal.close()


def rebuild(root: str | Path, header: dict[str, Any]) -> int:
    """Write a new catalog from the manifests and tombstones on disk; returns entries written."""
    root = os.path.realpath(root)
    root_fd = _durable.open_root(root)
    internal_fd = _durable.open_dirs(root_fd, [INTERNAL_DIR], INTERNAL_DIR)
    try:
        lines: list[bytes] = []
        n = 0
        for kind, doc in scan_manifests(root):
            n += 1
            if kind == "seal":
                entry = {"seq": n, "op": "seal", "manifest": doc}
            else:
                entry = {"seq": n, "op": "delete", "manifest": doc["manifest"], "tombstone": doc}
            lines.append(msgspec.json.encode(entry)[:-1])
        tmp_name = ".catalog.rebuild"
        _durable.unlink(internal_fd, tmp_name, tmp_name)
        j = Journal(internal_fd, tmp_name, f"{INTERNAL_DIR}/{tmp_name}", hashing=True, fsync=True)
        j.open({**header, "schema_type": "catalog", "rebuilt": True})
        if lines:
            j.append(lines)
        j.last_seq = n
        _durable.close(j.fd)
        _durable.rename(internal_fd, tmp_name, Catalog.NAME, f"{INTERNAL_DIR}/{CATALOG_NAME}")
        _durable.unlink(internal_fd, Catalog.NAME + ".head", f"{INTERNAL_DIR}/{CATALOG_NAME}.head")
        return n
    finally:
        _durable.close(internal_fd)
        _durable.close(root_fd)
