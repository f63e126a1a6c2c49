"""The audit trail of segments: which lifecycle events the audit log holds, and whether it matches the files.

A writer asks :func:`logged` at start which segments it finds sealed already
have their ``segment_sealed`` event (a kill can fall between the state file
saying "sealing" and the event), so it writes only the missing ones.
:func:`check_trail` compares the whole log with the manifests, tombstones and
catalog of a data root no recorder is writing, and :func:`segment_sizes`
lists every segment's size (benchmarks, tests). All of them only read.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from . import INTERNAL_DIR, _durable
from .catalog import read_catalog, scan_manifests

__all__ = ["AUDIT", "Trail", "check_trail", "logged", "segment_sizes"]

AUDIT = "audit.jsonl"
_FIRST = 64 << 10  # the first chunk read from the log's end: events just written are there
_CHUNK = 1 << 20


def _event_path(line: bytes) -> str | None:
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None  # a torn last line
    rec = obj.get("record") if isinstance(obj, dict) else None
    path = rec.get("path") if isinstance(rec, dict) else None
    return path if isinstance(path, str) else None


def logged(root_fd: int, kind: str, paths: Iterable[str]) -> set[str]:
    """Which of ``paths`` already have a ``kind`` event in the audit log.

    Reads the log backwards from its end (64 KiB first, then 1 MiB at a
    time) and stops as soon as every path is found, so the usual question
    (events written a moment ago, or just before a crash) reads little; a
    path with no event costs one pass over the whole log.
    """
    want = set(paths)
    found: set[str] = set()
    if not want:
        return found
    dir_fd = _durable.open_dirs(root_fd, [INTERNAL_DIR], INTERNAL_DIR)
    try:
        try:
            fd = os.open(AUDIT, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return found
        try:
            marker = b'"event_type":"' + kind.encode() + b'"'
            end, rest, chunk = os.fstat(fd).st_size, b"", _FIRST
            while end > 0 and found != want:
                start = max(0, end - chunk)
                chunk = _CHUNK
                lines = (os.pread(fd, end - start, start) + rest).split(b"\n")
                rest = lines.pop(0) if start > 0 else b""  # may be cut: read whole with the chunk before
                for ln in reversed(lines):
                    if marker in ln and (path := _event_path(ln)) in want:
                        found.add(str(path))
                end = start
        finally:
            os.close(fd)
    finally:
        _durable.close(dir_fd)
    return found


@dataclass
class Trail:
    """What :func:`check_trail` compared, and what did not match."""

    manifests: int = 0
    tombstones: int = 0
    catalog: int = 0
    events: Counter[str] = field(default_factory=Counter)  # event type -> lines
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the counts compared and how many problems."""
        return (f"{self.manifests} manifests + {self.tombstones} tombstones, {self.catalog} catalog segments, "
                f"{self.events['segment_sealed']} segment_sealed events "
                f"({self.events['segment_sealed_recovered']} written at recovery), "
                f"{self.events['segment_deleted']} segment_deleted events: {len(self.problems)} problems")


def _lines(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    for ln in data.split(b"\n")[1:]:
        if ln:
            try:
                obj = msgspec.json.decode(ln)
            except msgspec.DecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def check_trail(root: str | Path) -> Trail:
    """Compare the audit log's segment events with the manifests, tombstones and catalog under ``root``.

    Every segment that has a manifest, a tombstone or a catalog entry must
    have exactly one ``segment_sealed`` event, with the manifest's record
    count; every ``segment_sealed`` event must name such a segment (unless
    a ``seal_failed`` event says why it has none yet); every tombstone must
    have one ``segment_deleted`` event. Run it while no recorder writes.
    """
    root = Path(root)
    t = Trail()
    sealed: Counter[str] = Counter()
    records: dict[str, Any] = {}
    deleted: Counter[str] = Counter()
    failed: set[str] = set()
    for e in _lines(root / INTERNAL_DIR / AUDIT):
        kind = str(e.get("event_type"))
        rec: dict[str, Any] = e["record"] if isinstance(e.get("record"), dict) else {}
        t.events[kind] += 1
        path = str(rec.get("path"))
        if kind == "segment_sealed":
            sealed[path] += 1
            records[path] = rec.get("records")
            if rec.get("recovered"):
                t.events["segment_sealed_recovered"] += 1
        elif kind == "segment_deleted":
            deleted[path] += 1
        elif kind == "seal_failed":
            failed.add(path)
    on_disk: dict[str, dict[str, Any]] = {}
    tombs: set[str] = set()
    for kind, doc in scan_manifests(root):
        if kind == "seal":
            t.manifests += 1
            on_disk[str(doc.get("path"))] = doc
        else:
            t.tombstones += 1
            m = doc.get("manifest") or {}
            on_disk[str(m.get("path"))] = m
            tombs.add(str(m.get("path")))
    index = read_catalog(root)
    catalog: set[str] = set(index.segments) if index is not None else set()
    t.catalog = len(catalog)
    for path in sorted(set(on_disk) | catalog):
        n = sealed.get(path, 0)
        where = "manifest" if path in on_disk else "catalog entry"
        if n != 1:
            t.problems.append(f"{path}: {where}, but {n} segment_sealed events")
        elif path in on_disk and records.get(path) != on_disk[path].get("records"):
            t.problems.append(f"{path}: segment_sealed says {records.get(path)} records, "
                              f"the manifest {on_disk[path].get('records')}")
    for path in sorted(set(sealed) - set(on_disk) - catalog - failed):
        t.problems.append(f"{path}: segment_sealed event, but no manifest, tombstone or catalog entry")
    for path in sorted(tombs):
        if deleted.get(path, 0) != 1:
            t.problems.append(f"{path}: tombstone, but {deleted.get(path, 0)} segment_deleted events")
    return t


def segment_sizes(root: str | Path) -> dict[str, list[tuple[str, int, int]]]:
    """Schema type -> (journal path, records, bytes) of every segment under ``root``, by path.

    A sealed segment is measured by its manifest (its journal may be gone,
    converted to Parquet); an open one by its journal's whole lines (a
    journal is a segment when its header has ``segment``).
    """
    root = Path(root)
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for kind, doc in scan_manifests(root):
        m = doc if kind == "seal" else doc.get("manifest") or {}
        found.setdefault(str(m.get("schema_type")), {})[str(m.get("path"))] = (int(m.get("records") or 0),
                                                                              int(m.get("bytes") or 0))
    for path in sorted(root.rglob("*.jsonl")):
        rel = str(path.relative_to(root))
        if rel.startswith(INTERNAL_DIR + "/") or path.name.startswith("."):
            continue
        data = path.read_bytes()
        try:
            header = msgspec.json.decode(data.split(b"\n", 1)[0])
        except msgspec.DecodeError:
            continue
        if not isinstance(header, dict) or "segment" not in header:
            continue
        segs = found.setdefault(str(header.get("schema_type")), {})
        if rel not in segs:
            whole = data[: data.rfind(b"\n") + 1]
            segs[rel] = (max(0, whole.count(b"\n") - 1), len(data))
    return {t: sorted((p, r, b) for p, (r, b) in segs.items()) for t, segs in found.items()}
