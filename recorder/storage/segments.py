"""Sealed segments: manifests, Parquet publication, retention, off the ack path.

A writer seals a segment by closing it and handing it to the Sealer thread;
the Sealer writes the manifest, records it in the catalog, converts the
segments of a format other than the journal's (``recorder.storage.formats``
encodes; here: temp file, fsync, rename, dir fsync; the journal is removed
only after that), and deletes old segments per retention policy.
Every step is redone from what is on disk if a crash cuts it short.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import msgspec

from . import INTERNAL_DIR, _durable, formats
from .._env import iso_ns
from ._segfiles import manifest_of
from ._trail import logged
from .catalog import MANIFEST_SUFFIX, TOMBSTONE_SUFFIX
from .catalog_log import Catalog
from ..exceptions import SegmentChanged
from ..schema.registry import Registry

__all__ = ["Sealer", "Usage", "build_manifest", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1


def _read_file(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        return f.read()


class _Line(msgspec.Struct):
    """The fields of a record line that a manifest summarises (the record is parsed, not built)."""

    seq: Any = msgspec.UNSET
    received: Any = msgspec.UNSET
    schema_version: Any = msgspec.UNSET
    user_id: Any = msgspec.UNSET
    session_id: Any = msgspec.UNSET
    producer: Any = msgspec.UNSET
    pseq: Any = msgspec.UNSET
    timestamp: Any = msgspec.UNSET
    h: Any = msgspec.UNSET


_line = msgspec.json.Decoder(_Line)


def _summary(line: bytes) -> dict[str, Any]:
    s = _line.decode(line)
    return {f: v for f in _Line.__struct_fields__ if (v := getattr(s, f)) is not msgspec.UNSET}


def build_manifest(data: bytes, rel: str, schema_type: str, fmt: str, stream: str, segment: int,
                   number: int = 0) -> dict[str, Any]:
    """Summarise a sealed journal's bytes into its manifest.

    ``number`` is the segment's catalog number: 1 + the highest number the
    catalog holds, so it grows in sealing order across every stream and type,
    and, being kept in the manifest (and its tombstone), survives a catalog
    rebuild. Publication uses it as the Delta application transaction version.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    header = msgspec.json.decode(lines[0]) if lines else {}
    records = 0
    first_seq = last_seq = None
    first_rx = last_rx = None
    ts_min: tuple[datetime, str] | None = None
    ts_max: tuple[datetime, str] | None = None
    versions: dict[str, int] = {}
    users: set[str] = set()
    sessions: set[str] = set()
    producers: dict[str, int] = {}
    head = header.get("h", "")
    for line in lines[1:]:
        e = _summary(line)
        records += 1
        first_seq = e["seq"] if first_seq is None else first_seq
        last_seq = e["seq"]
        first_rx = e["received"] if first_rx is None else first_rx
        last_rx = e["received"]
        v = e.get("schema_version") or "?"
        versions[v] = versions.get(v, 0) + 1
        if e.get("user_id"):
            users.add(e["user_id"])
        if e.get("session_id"):
            sessions.add(e["session_id"])
        p, n = e.get("producer"), e.get("pseq")
        if isinstance(p, str) and isinstance(n, int) and n >= producers.get(p, 0):  # in-process: pseq 0
            producers[p] = n
        head = e.get("h", head)
        ts = e.get("timestamp")
        if isinstance(ts, str):
            try:
                t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            except ValueError:
                continue  # not a time: the segment's time range ignores it
            if t.tzinfo is None:
                t = t.replace(tzinfo=timezone.utc)  # A3CP times are UTC
            if ts_min is None or t < ts_min[0]:
                ts_min = (t, ts)
            if ts_max is None or t > ts_max[0]:
                ts_max = (t, ts)
    return {
        "manifest_version": MANIFEST_VERSION,
        "state": "sealed",
        "schema_type": schema_type,
        "format": fmt,
        "path": rel,
        "stream": stream,
        "segment": segment,
        "number": number,
        "records": records,
        "bytes": len(data),
        "first_seq": first_seq,
        "last_seq": last_seq,
        "first_received": first_rx,
        "last_received": last_rx,
        "first_timestamp": ts_min[1] if ts_min else None,
        "last_timestamp": ts_max[1] if ts_max else None,
        "versions": versions,
        "users": sorted(users),
        "sessions": sorted(sessions),
        "producers": producers,
        "prev_head": header.get("prev"),
        "chain_head": head,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sealed_at": iso_ns(time.time_ns()),
    }


class Usage:
    """Bytes on disk per schema type, for storage limits (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_type: dict[str, int] = {}

    def add(self, schema_type: str, n: int) -> None:
        with self.lock:
            self.by_type[schema_type] = self.by_type.get(schema_type, 0) + n

    def of(self, schema_type: str) -> int:
        return self.by_type.get(schema_type, 0)

    def total(self) -> int:
        with self.lock:
            return sum(self.by_type.values())


#: (schema type, journal path relative to the root, stream id, segment number)
Job = tuple[str, str, str, int]


class Sealer(threading.Thread):
    """Finishes sealed segments in the background: manifest, catalog, Parquet, retention."""

    def __init__(self, root_fd: int, registry: Registry, catalog: Catalog, usage: Usage,
                 on_event: Callable[[str, dict[str, Any]], None]) -> None:
        super().__init__(name="sealer", daemon=True)
        self.root_fd = root_fd
        self.registry = registry
        self.catalog = catalog
        self.usage = usage
        self.on_event = on_event
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        #: per schema type, journal paths whose sealing finished (the writer drains it)
        self.finished: dict[str, queue.SimpleQueue[str]] = {}
        self.last_retention = 0.0
        self.errors: list[str] = []
        self.busy = threading.Event()
        self.seal_ms: list[float] = []
        #: True for a sealed segment that must be kept (not yet published to the lake): retention and
        #: delete_oldest pass over it (set by the Store when [publish] is configured)
        self.keep: Callable[[dict[str, Any]], bool] = lambda _manifest: False

    def submit(self, job: Job) -> None:
        """Queue a closed segment for sealing."""
        self.busy.set()
        self.jobs.put(job)

    def stop(self) -> None:
        """Finish queued work, then exit."""
        self.jobs.put(None)

    def run(self) -> None:
        try:
            self._log_interrupted_deletes()
        except Exception as e:  # noqa: BLE001 - an audit gap is reported, never a reason to stop sealing
            self.on_event("seal_failed", {"path": f"{INTERNAL_DIR}/audit.jsonl", "error": f"{type(e).__name__}: {e}"})
        while True:
            try:
                job = self.jobs.get(timeout=5.0)
            except queue.Empty:
                self.retention(time.time())
                continue
            if job is None:
                return
            t0 = time.monotonic()
            try:
                self.seal(*job)
                q = self.finished.get(job[0])
                if q is not None and self._sealed_event(job[1], job[3]):
                    q.put(job[1])  # else it stays "sealing": the next start writes the event
            except Exception as e:  # noqa: BLE001 - keep sealing the rest; reported and retried at start
                self.errors.append(f"{job[1]}: {type(e).__name__}: {e}")
                self.on_event("seal_failed", {"path": job[1], "error": f"{type(e).__name__}: {e}"})
            self.seal_ms.append((time.monotonic() - t0) * 1000)
            if self.jobs.empty():
                self.busy.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued job is done (tests, graceful stop)."""
        deadline = time.monotonic() + timeout
        while self.busy.is_set() or not self.jobs.empty():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _sealed_event(self, rel: str, segment: int) -> bool:
        """Make sure the audit log holds the segment's ``segment_sealed`` event; True once it does.

        The writer wrote it before handing the segment over, but the audit
        log drops an event it cannot take (counted, never a refusal of stored
        records): such an event is written again here, from the manifest.
        """
        if logged(self.root_fd, "segment_sealed", [rel]):
            return True
        m = manifest_of(self.root_fd, rel) or {}
        self.on_event("segment_sealed", {"path": rel, "records": m.get("records"), "bytes": m.get("bytes"),
                                         "segment": segment, "recovered": True})
        return bool(logged(self.root_fd, "segment_sealed", [rel]))

    def _log_interrupted_deletes(self) -> None:
        """Write the ``segment_deleted`` events a kill kept out of the audit log.

        A deletion appends its catalog entry, then its event; a kill in
        between leaves a deleted segment without its event. Such an entry is
        among the catalog's last ones at start: those without an event in
        the audit log get it now, marked recovered.
        """
        paths = [p for op, p in self.catalog.last if op == "delete"]
        if not paths:
            return
        have = logged(self.root_fd, "segment_deleted", paths)
        for path in paths:
            seg = self.catalog.segments.get(path)
            if path in have or seg is None or seg.deleted is None:
                continue
            m = seg.manifest
            self.on_event("segment_deleted", {"path": path, "reason": seg.deleted.get("reason"),
                                              "sha256": m.get("sha256"), "records": m.get("records"),
                                              "bytes": None, "recovered": True})
            have.add(path)

    # -- one segment -------------------------------------------------------
    def seal(self, schema_type: str, rel: str, stream: str, segment: int) -> None:
        """Bring one closed segment to its final state; safe to repeat after a crash."""
        spec = self.registry.get(schema_type)
        *dirs, name = rel.split("/")
        dir_fd = _durable.open_dirs(self.root_fd, dirs, rel)
        try:
            _durable.sweep_temp(dir_fd)  # a Parquet file a crash left half-written, never published
            stem = formats.stem(name)
            mname = stem + MANIFEST_SUFFIX
            manifest = self._load(dir_fd, mname)
            if manifest is None:
                data = _read_file(dir_fd, name)
                manifest = build_manifest(data, rel, schema_type, spec.config.format, stream, segment,
                                          self.catalog.next_number())
                _durable.write_new(dir_fd, mname, msgspec.json.encode(manifest), mname)
            self._catalog_has(manifest)  # a crash may have come between the manifest and its entry
            fmt = formats.get(spec.config.format)
            if fmt.pending(manifest):
                self._convert(dir_fd, name, stem, rel, manifest, fmt, spec.model_for)
            if manifest["state"] == "converted" and not spec.config.keep_journal:
                if _exists(dir_fd, name):
                    self.usage.add(schema_type, -manifest["bytes"])
                _durable.unlink(dir_fd, name, rel)
                _durable.unlink(dir_fd, name + ".head", rel + ".head")
        finally:
            _durable.close(dir_fd)

    def _catalog_has(self, manifest: dict[str, Any]) -> None:
        """Add the manifest to the catalog unless the catalog already holds this very state."""
        seg = self.catalog.segments.get(manifest["path"])
        if seg is None or seg.manifest != manifest:
            self.catalog.add("convert" if manifest["state"] == "converted" else "seal", manifest)

    def _load(self, dir_fd: int, mname: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = msgspec.json.decode(_read_file(dir_fd, mname))
            return doc
        except FileNotFoundError:
            return None

    def _convert(self, dir_fd: int, name: str, stem: str, rel: str, manifest: dict[str, Any],
                 fmt: formats.Format, model_for: Callable[[str], Any]) -> None:
        """Write the segment's data file of format ``fmt`` (whole or not at all), then its manifest."""
        data = _read_file(dir_fd, name)
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise SegmentChanged(rel, "journal changed since it was sealed (its sha256 is not the "
                                      "manifest's); not converting")
        encoded = fmt.encode(formats.record_lines(data), model_for)
        if encoded is None:
            return  # the journal is the data file: nothing to convert
        dname = fmt.data_name(stem)
        drel = fmt.data_name(formats.stem(rel))
        digests: list[str] = []
        _durable.publish(dir_fd, dname, lambda f: digests.append(encoded.write(f)), drel)
        size = os.stat(dname, dir_fd=dir_fd, follow_symlinks=False).st_size
        self.usage.add(manifest["schema_type"], size)
        manifest["state"] = "converted"
        manifest[fmt.name] = {"path": drel, "sha256": digests[0], "rows": encoded.rows, "bytes": size}
        manifest["journal_kept"] = bool(self.registry.get(manifest["schema_type"]).config.keep_journal)
        mname = stem + MANIFEST_SUFFIX
        _durable.write_new(dir_fd, mname, msgspec.json.encode(manifest), mname)
        self._catalog_has(manifest)

    # -- retention -----------------------------------------------------------
    def retention(self, now: float) -> int:
        """Delete sealed segments older than their type's ``retention_s``; returns how many."""
        n = 0
        for name, spec in self.registry.specs.items():
            keep = spec.config.retention_s
            if not keep:
                continue
            cutoff = iso_ns(int((now - keep) * 1e9))
            for seg in self.catalog.search(schema_type=name):
                m = seg.manifest
                if (m["last_received"] or "") < cutoff and not formats.of(m).pending(m) and not self.keep(m):
                    self.delete(m, f"retention: older than types.{name}.retention_s = {keep:g}")
                    n += 1
        return n

    def delete(self, manifest: dict[str, Any], reason: str) -> int:
        """Delete one sealed segment's data, leaving a tombstone; returns bytes freed."""
        rel = manifest["path"]
        *dirs, name = rel.split("/")
        stem = formats.stem(name)
        data = formats.of(manifest).data_name(stem)  # the journal itself for a JSONL segment
        dir_fd = _durable.open_dirs(self.root_fd, dirs, rel)
        freed = 0
        try:
            tomb = {"manifest": manifest, "reason": reason, "deleted_at": iso_ns(time.time_ns())}
            _durable.write_new(dir_fd, stem + TOMBSTONE_SUFFIX, msgspec.json.encode(tomb), rel)
            counted = 0  # bytes storage usage counts: the data files only
            for victim in dict.fromkeys((data, name, name + ".head", stem + MANIFEST_SUFFIX)):
                try:
                    size = os.stat(victim, dir_fd=dir_fd, follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                freed += size
                counted += size if victim in (data, name) else 0
                _durable.unlink(dir_fd, victim, rel)
            self.catalog.add("delete", manifest, tomb)
        finally:
            _durable.close(dir_fd)
        self.usage.add(manifest["schema_type"], -counted)
        details = {"path": rel, "reason": reason, "sha256": manifest["sha256"], "records": manifest["records"],
                   "bytes": freed}
        self.on_event("segment_deleted", details)
        if not logged(self.root_fd, "segment_deleted", [rel]):  # the audit log dropped it: once more
            self.on_event("segment_deleted", {**details, "recovered": True})
        return freed


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False
