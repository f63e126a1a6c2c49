"""The catalog of sealed segments, read side: replay it, search it without scanning data, scan manifests.

Nothing here writes (``catalog_log`` appends and rebuilds). The catalog is a
chained journal (``_recorder/catalog.jsonl``) of entries:
``seal`` (a segment's manifest), ``convert`` (its Parquet file was
published) and ``delete`` (retention removed it, with the digest of what was
removed). It is derived data: every entry can be rebuilt from the manifests
and tombstones that sit beside the segments (``recorder catalog --rebuild``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from . import INTERNAL_DIR, formats

__all__ = ["CATALOG_NAME", "CatalogIndex", "Segment", "MANIFEST_SUFFIX", "TOMBSTONE_SUFFIX", "read_catalog",
           "scan_manifests", "sealed_segments"]

MANIFEST_SUFFIX = ".manifest.json"
TOMBSTONE_SUFFIX = ".deleted.json"
CATALOG_NAME = "catalog.jsonl"  # under INTERNAL_DIR


@dataclass
class Segment:
    """One sealed segment as the catalog knows it (a manifest, plus its fate)."""

    manifest: dict[str, Any]
    deleted: dict[str, Any] | None = None
    line: int = 0  # the catalog line of the entry that gave this manifest

    @property
    def path(self) -> str:
        """The segment's data file, relative to the data root (Parquet once converted)."""
        m = self.manifest
        return formats.data_path(m)

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


class CatalogIndex:
    """Sealed segments by journal path, folded from catalog entries: the one replay of the catalog."""

    def __init__(self) -> None:
        self.segments: dict[str, Segment] = {}  # journal path (manifest["path"]) -> segment
        #: journal path -> (catalog line, manifest) of its delete entry
        self.deletions: dict[str, tuple[int, dict[str, Any]]] = {}
        self.max_number = 0  # the highest catalog number of a segment (manifest["number"]) seen
        #: (op, journal path) of the last entries read, oldest first (a kill may have cut the
        #: work that follows an entry short: the sealer finishes it)
        self.last: deque[tuple[str, str]] = deque(maxlen=16)

    def load(self, lines: Iterable[bytes]) -> None:
        """Apply every whole entry line of a catalog file (its header and a torn last line are skipped,
        and so is a line that is no entry: ``verify`` reports the damage)."""
        for n, line in enumerate(lines, 1):
            if n == 1 or not line.endswith(b"\n"):
                continue
            try:
                entry = msgspec.json.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError):
                continue
            if isinstance(entry, dict) and isinstance(entry.get("manifest"), dict) and "path" in entry["manifest"]:
                self.apply(entry, n)
                self.last.append((str(entry.get("op")), str(entry["manifest"]["path"])))

    def apply(self, entry: dict[str, Any], line: int = 0) -> None:
        """Fold one entry (at catalog line ``line``) into the index."""
        op = entry.get("op")
        m = entry.get("manifest", {})
        number = m.get("number")
        if isinstance(number, int):
            self.max_number = max(self.max_number, number)
        if op in ("seal", "convert"):
            self.segments[m["path"]] = Segment(m, line=line)
        elif op == "delete":
            seg = self.segments.setdefault(m["path"], Segment(m, line=line))
            seg.deleted = entry.get("tombstone", {})
            self.deletions[m["path"]] = (line, m)

    def search(self, *, schema_type: str | None = None, version: str | None = None, user_id: str | None = None,
               session_id: str | None = None, since: datetime | None = None,
               until: datetime | None = None, include_deleted: bool = False) -> list[Segment]:
        """Sealed segments that may hold matching records, oldest first."""
        found = [s for s in self.segments.values()
                 if (include_deleted or s.deleted is None)
                 and s.matches(schema_type, version, user_id, session_id, since, until)]
        return sorted(found, key=lambda s: int(s.manifest["first_seq"] or 0))


def read_catalog(root: str | Path) -> CatalogIndex | None:
    """The catalog of the data root ``root`` replayed, None if it has none."""
    try:
        f = open(Path(root) / INTERNAL_DIR / CATALOG_NAME, "rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    index = CatalogIndex()
    with f:
        index.load(f)
    return index


def sealed_segments(root: str | Path) -> dict[str, dict[str, Any]]:
    """Journal path -> manifest of each sealed, not deleted segment of ``root`` (empty without a catalog)."""
    index = read_catalog(root)
    if index is None:
        return {}
    return {path: seg.manifest for path, seg in index.segments.items() if seg.deleted is None}


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
