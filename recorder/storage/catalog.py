"""The catalog of sealed segments: search without scanning data, rebuild from manifests.

The catalog is a chained journal (``_recorder/catalog.jsonl``) of entries:
``seal`` (a segment's manifest), ``convert`` (its Parquet file was
published) and ``delete`` (retention removed it, with the digest of what was
removed). It is derived data: every entry can be rebuilt from the manifests
and tombstones that sit beside the segments (``recorder catalog --rebuild``).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from . import INTERNAL_DIR, _durable
from .journal import Journal

__all__ = ["Catalog", "Segment", "MANIFEST_SUFFIX", "TOMBSTONE_SUFFIX", "scan_manifests"]

MANIFEST_SUFFIX = ".manifest.json"
TOMBSTONE_SUFFIX = ".deleted.json"


@dataclass
class Segment:
    """One sealed segment as the catalog knows it (a manifest, plus its fate)."""

    manifest: dict[str, Any]
    deleted: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        """The segment's data file, relative to the data root (Parquet once converted)."""
        m = self.manifest
        return str(m.get("parquet", {}).get("path") or m["path"])

    def matches(self, schema_type: str | None, version: str | None, user_id: str | None,
                session_id: str | None, since: datetime | None, until: datetime | None) -> bool:
        """True if the segment may hold records matching every given filter."""
        m = self.manifest
        if schema_type is not None and m["schema_type"] != schema_type:
            return False
        if version is not None and not any(v == version or v.startswith(version + ".") for v in m["versions"]):
            return False
        if user_id is not None and user_id not in m["users"]:
            return False
        if session_id is not None and session_id not in m["sessions"]:
            return False
        lo, hi = m.get("first_timestamp"), m.get("last_timestamp")
        if since is not None and hi is not None and _ts(hi) < since:
            return False
        if until is not None and lo is not None and _ts(lo) >= until:
            return False
        return True


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class Catalog:
    """In-memory index of sealed segments, persisted as a chained journal."""

    NAME = "catalog.jsonl"

    def __init__(self, internal_fd: int, header: dict[str, Any], root: str,
                 on_event: Callable[[str, dict[str, Any]], None]) -> None:
        from .writer import open_journal

        self.internal_fd = internal_fd
        self.lock = threading.Lock()
        self.segments: dict[str, Segment] = {}  # journal path (manifest["path"]) -> segment
        self.max_number = 0  # the highest catalog number of a segment (manifest["number"]) seen
        #: (op, journal path) of the last entries found at start, oldest first (a kill may have cut the
        #: work that follows an entry short: the sealer finishes it)
        self.last: deque[tuple[str, str]] = deque(maxlen=16)
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
            for n, line in enumerate(f):
                if n == 0 or not line.endswith(b"\n"):
                    continue
                entry = msgspec.json.decode(line)
                self._apply(entry)
                self.last.append((str(entry.get("op")), str((entry.get("manifest") or {}).get("path"))))

    def _apply(self, entry: dict[str, Any]) -> None:
        op = entry.get("op")
        m = entry.get("manifest", {})
        self.max_number = max(self.max_number, int(m.get("number") or 0))
        if op in ("seal", "convert"):
            self.segments[m["path"]] = Segment(m)
        elif op == "delete":
            seg = self.segments.setdefault(m["path"], Segment(m))
            seg.deleted = entry.get("tombstone", {})

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
            self._apply(entry)

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
            found = [s for s in self.segments.values()
                     if (include_deleted or s.deleted is None)
                     and s.matches(schema_type, version, user_id, session_id, since, until)]
        return sorted(found, key=lambda s: int(s.manifest["first_seq"] or 0))

    def close(self) -> None:
        self.journal.close()


def scan_manifests(root: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every manifest and tombstone under ``root`` as (kind, document), kind 'seal' or 'delete'."""
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d != INTERNAL_DIR]
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith(MANIFEST_SUFFIX) and not f.startswith("."):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    yield "seal", msgspec.json.decode(fh.read())
            elif f.endswith(TOMBSTONE_SUFFIX) and not f.startswith("."):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    yield "delete", msgspec.json.decode(fh.read())


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
        _durable.rename(internal_fd, tmp_name, Catalog.NAME, f"{INTERNAL_DIR}/catalog.jsonl")
        _durable.unlink(internal_fd, Catalog.NAME + ".head", f"{INTERNAL_DIR}/catalog.jsonl.head")
        return n
    finally:
        _durable.close(internal_fd)
        _durable.close(root_fd)
