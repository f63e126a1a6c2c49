"""An in-process recorder over one data root: registry, writers, quarantine, own audit log.

The recorder service wraps exactly this object (one writer thread per type);
used directly it is a library for single-process producers and for tests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .storage import INTERNAL_DIR, _durable
from ._env import iso_ms_now, iso_ns, runtime_env
from .schema._ids import holds_record_id, new_record_id, with_default_version
from .service._run import take_lock
from .schema.config import Config, load_config
from .exceptions import RecorderError, StorageFull, ValidationError
from .storage.journal import Journal
from .schema.registry import Registry
from .protocol import Record
from .schema.accept import Accepted, Acceptor
from .schema.validation import encode_record, quarantine_copy, safe_json
from .storage.catalog_log import Catalog
from .publish._state import data_bytes, unpublished_check
from .storage.segments import Sealer, Usage
from .service._dedup import DurableIndex
from .storage._segfiles import SEALED_TAIL, pseqs_after
from .storage.journal import open_journal
from .storage.writer import Entry, TypeWriter

__all__ = ["Store", "INTERNAL_DIR"]

_log = logging.getLogger("recorder.store")
_LEASE = 1_000_000  # sequence numbers reserved per durable lease write


class _SeqLease:
    """Recorder sequence numbers that only grow, across restarts too.

    A lease (the highest number that may be used) is written durably before
    numbers up to it are handed out, so a restart continues above it.
    """

    def __init__(self, dir_fd: int) -> None:
        self.dir_fd = dir_fd
        try:
            fd = os.open("seq", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                last = int(os.read(fd, 64).decode() or 0)
            finally:
                os.close(fd)
        except FileNotFoundError:
            last = 0
        self.next = last + 1
        self.limit = last
        self._extend()

    def _extend(self) -> None:
        self.limit = self.next + _LEASE
        _durable.write_new(self.dir_fd, "seq", str(self.limit).encode(), f"{INTERNAL_DIR}/state/seq")

    def take(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive numbers; returns the first."""
        first = self.next
        self.next += n
        if self.next > self.limit:
            self._extend()
        return first


class _Quarantine:
    """The chained log of rejected input: reason, origin, bounded redacted copy."""

    def __init__(self, journal: Journal, max_bytes: int, copy_bytes: int) -> None:
        self.journal = journal
        self.max_bytes = max_bytes
        self.copy_bytes = copy_bytes
        self.count = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def add(self, denied: tuple[frozenset[str], tuple[str, ...]], schema_type: str, raw: bytes,
            err: RecorderError, producer: str, pseq: int, origin: str) -> None:
        excerpt, size, digest = quarantine_copy(*denied, raw, self.copy_bytes)
        line = {
            "seq": 0,
            "received": iso_ns(time.time_ns()),
            "schema_type": str(schema_type)[:128],
            "producer": producer,
            "pseq": pseq,
            "origin": origin,
            "code": err.code,
            "field": getattr(err, "field", "$"),
            "reason": str(err),
            "size": size,
            "sha256": digest,
            "excerpt": excerpt,
        }
        body = safe_json(line)[:-1]
        with self.lock:
            if self.journal.size + len(body) + 200 > self.max_bytes:
                self.dropped += 1  # counted and reported, never silent
                return
            self.journal.last_seq += 1
            body = body.replace(b'{"seq":0,', b'{"seq":%d,' % self.journal.last_seq, 1)
            self.journal.append([body])
            self.count += 1

    def close(self) -> None:
        self.journal.close()


class Store:
    """Validates and durably records records into one data root.

    Args:
        config: a Config, a path to a TOML file, or None for the packaged default.
        data_root: overrides ``recorder.data_root`` of the config.

    Raises:
        ConfigError: the config is wrong.
        RecorderError: another recorder holds this data root.
    """

    def __init__(self, config: Config | str | Path | None = None, data_root: str | Path | None = None) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.registry = Registry.from_config(self.config)
        self.root = os.path.realpath(str(data_root or self.config.recorder.data_root))
        self.root_fd = _durable.open_root(self.root)
        try:
            self.internal_fd = _durable.open_dirs(self.root_fd, [INTERNAL_DIR], INTERNAL_DIR)
        except RecorderError:
            _durable.close(self.root_fd)
            raise
        try:
            self._lock_fd = self._take_lock()
        except RecorderError:
            _durable.close(self.internal_fd)
            _durable.close(self.root_fd)
            raise
        state_fd = _durable.open_dirs(self.internal_fd, ["state"], f"{INTERNAL_DIR}/state")
        for fd in (self.internal_fd, state_fd):
            _durable.sweep_temp(fd)  # a crash inside an atomic write leaves its hidden temp file
        self.seq = _SeqLease(state_fd)
        self.env = runtime_env(self.config.digest)
        header = {"env": self.env}
        settings = self.config.recorder
        # The internal logs recover like any journal; what their own recovery
        # did is recorded once the audit log is open.
        early: list[tuple[str, dict[str, Any]]] = []

        def defer(kind: str, details: dict[str, Any]) -> None:
            early.append((kind, details))

        self._audit, _ = open_journal(self.internal_fd, "audit.jsonl", f"{INTERNAL_DIR}/audit.jsonl",
                                      {**header, "schema_type": "recorder_audit"}, defer, hashing=True, fsync=True)
        self._audit_lock = threading.Lock()
        self.events_dropped = 0
        qj, _ = open_journal(self.internal_fd, "quarantine.jsonl", f"{INTERNAL_DIR}/quarantine.jsonl",
                             {**header, "schema_type": "quarantine"}, defer, hashing=True, fsync=True)
        self.quarantine = _Quarantine(qj, settings.quarantine_max_bytes, settings.quarantine_copy_bytes)
        for kind, details in early:
            self.event(kind, details)
        self.catalog = Catalog(self.internal_fd, header, self.root, self.event)
        self.usage = Usage()
        self.sealer = Sealer(self.root_fd, self.registry, self.catalog, self.usage, self.event)
        if self.config.publish is not None:
            self.sealer.keep = unpublished_check(self.root, self.config)
        self._free: tuple[float, int] = (0.0, 0)
        #: the one accept step per type, shared by Store.record and the service's actors
        self.acceptors = {name: Acceptor(spec, settings.max_depth, settings.session_end_event)
                          for name, spec in self.registry.specs.items()}
        self.writers = {
            name: TypeWriter(spec, self.root_fd, header, settings.max_open_files, self.event, state_fd,
                             seal=self._submit_seal, admit=self.admit, usage=self.usage.add)
            for name, spec in self.registry.specs.items()
        }
        self.sealer.finished = {name: w.finished for name, w in self.writers.items()}
        self._state_fd = state_fd
        self.state_fd = state_fd  # _recorder/state: the service's checkpoints go here
        for seg in self.catalog.search(include_deleted=False):
            m = seg.manifest
            self.usage.add(m["schema_type"], m.get("parquet", {}).get("bytes", 0)
                           + (m["bytes"] if m["state"] == "sealed" or m.get("journal_kept") else 0))
        #: producer id -> sequence numbers found in the tails of active files
        self.on_disk: dict[str, set[int]] = {}
        for w in self.writers.values():
            for line in w.reopen_active():
                producer, pseq = line.get("producer"), line.get("pseq")
                if isinstance(producer, str) and isinstance(pseq, int):
                    self.on_disk.setdefault(producer, set()).add(pseq)
        #: every durable pseq per producer: the last checkpoint, and what the files written since hold
        t0 = time.monotonic()
        self.durable = DurableIndex.load(state_fd)
        for w in self.writers.values():
            for rel in sorted(w.active):
                # no checkpoint yet (a recording made before it existed): the files' ends only
                limit = None if self.durable.loaded else SEALED_TAIL
                for producer, pseq in pseqs_after(self.root_fd, rel, self.durable.upto, limit):
                    self.durable.add(producer, pseq)
        self.durable.start_s = time.monotonic() - t0  # start-up work of exact de-duplication (stats)
        self.sealer.start()
        self.event("recorder_start", {"data_root": self.root, "config": self.config.source,
                                      "config_digest": self.config.digest})

    def _take_lock(self) -> int:
        return take_lock("lock", f"{self.root}: data root is in use by another recorder",
                         dir_fd=self.internal_fd, mode=0o644)

    # -- the recorder's own audit log -----------------------------------
    def event(self, kind: str, details: dict[str, Any]) -> None:
        """Record one of the recorder's own events (start, stop, recovery) as an AuditEvent.

        Cut bytes (``details["data"]``) are kept in ``_recorder/torn/`` first,
        and a failure there raises: recovery must not cut what it cannot keep.
        A failure to append the event itself is counted in ``events_dropped``.
        """
        data = details.pop("data", None)
        if isinstance(data, bytes):  # cut bytes are kept aside, never silently deleted
            name = f"{details['path'].replace('/', '%')}@{details['offset']}.{time.time_ns()}.bin"
            torn_fd = _durable.open_dirs(self.internal_fd, ["torn"], f"{INTERNAL_DIR}/torn")
            try:
                _durable.write_new(torn_fd, name, data, f"{INTERNAL_DIR}/torn/{name}")
            finally:
                _durable.close(torn_fd)
            details["kept_as"] = f"{INTERNAL_DIR}/torn/{name}"
        record = {"record_id": str(uuid.uuid4()), "timestamp": iso_ms_now(), "schema_version": "1.0.0",
                  "user_id": "recorder", "source": "recorder", "event_type": kind, **details}
        with self._audit_lock:
            body = safe_json({"seq": self._audit.last_seq + 1, "received": iso_ns(time.time_ns()),
                              "event_type": kind, "record": record})[:-1]
            try:
                self._audit.append([body])
                self._audit.last_seq += 1
            except RecorderError as e:
                # Events often report a failing disk; losing one must not turn a
                # stored record into a refusal or stop a writer. Counted, and said.
                self.events_dropped += 1
                _log.error("audit event %r not written: %s", kind, e)

    # -- validating and writing -------------------------------------------
    def check(self, rec: Record) -> Accepted:
        """Accept the record a frame carries, with the frame's metadata (no disk access).

        Raises:
            ValidationError: or a subclass naming the field and the reason.
        """
        acceptor = self.acceptors.get(rec.schema_type)
        if acceptor is None:  # registry.get raises UnknownSchemaError naming the known types
            acceptor = self.acceptors[self.registry.get(rec.schema_type).name]
        return acceptor(rec)

    def reject(self, meta_type: str, raw: bytes, err: RecorderError, producer: str = "inproc",
               pseq: int = 0, origin: str = "in-process") -> None:
        """Put rejected input into the quarantine log."""
        self.quarantine.add(self.registry.denied(meta_type), meta_type, raw, err, producer, pseq, origin)

    def record(self, record: BaseModel | dict[str, Any] | bytes, *, schema_type: str | None = None,
               producer: str = "inproc", pseq: int = 0, **meta: Any) -> int:
        """Validate one record and append it durably; returns its recorder sequence number.

        Args:
            record: a pydantic model instance, a dict, or JSON bytes.
            schema_type: the registered type; inferred from a model's class if omitted.
            producer: producer id written in the envelope.
            pseq: producer sequence number written in the envelope.
            **meta: schema_version, record_id, user_id, session_id, source, action_id, tags.
                A record_id that neither the record nor ``meta`` gives is made
                here (a new UUID); a missing schema_version is the type's
                ``default_version`` where the registry sets one.

        Raises:
            ValidationError: the record was refused (and quarantined).
            StorageFull: the disk is full; the record was not written.
            Unwritable: its destination cannot be written (quarantined); others can.
        """
        stype = schema_type or ""
        raw = b""
        try:
            stype = stype or self.type_of(record)
            raw = encode_record(record, stype)
            if meta.get("record_id") is None and not holds_record_id(record, raw):
                meta["record_id"] = new_record_id()
            rec = Record(producer, pseq, stype, raw, **meta)
            spec = self.registry.specs.get(stype)
            acc = self.check(with_default_version(rec, spec.config.default_version) if spec else rec)
        except ValidationError as e:
            self.reject(stype, raw, e, producer, pseq)
            raise
        entry = Entry(acc, self.seq.take(), time.time_ns(), producer, pseq)
        refused = self.writers[acc.spec.name].write([entry])
        if refused:
            err = refused[entry.seq]
            self.reject(stype, raw, err, producer, pseq)
            raise err
        if acc.ends_session:
            self.end_session(acc.user_id, acc.session_id or "")
        return entry.seq

    def type_of(self, record: Any) -> str:
        """The registered schema type whose model is ``type(record)``."""
        for name, spec in self.registry.specs.items():
            if any(type(record) is model for _, model in spec.models):
                return name
        raise ValidationError(type(record).__name__, "schema_type",
                              "cannot infer the schema type: pass schema_type=")

    # -- segments and storage limits --------------------------------------
    def _submit_seal(self, schema_type: str, rel: str, stream: str, segment: int) -> None:
        self.sealer.submit((schema_type, rel, stream, segment))

    def end_session(self, user_id: str | None, session_id: str) -> int:
        """Seal every open segment of a session, in every type (in-process use)."""
        return sum(w.end_session(user_id, session_id) for w in self.writers.values())

    def housekeeping(self) -> None:
        """Seal segments due by age or idleness (in-process use; actors do this on their own)."""
        now = time.monotonic()
        for w in self.writers.values():
            w.housekeeping(now)

    def _free_bytes(self) -> int:
        now = time.monotonic()
        if now - self._free[0] > 0.5:
            st = os.statvfs(self.root_fd)
            self._free = (now, st.f_bavail * st.f_frsize)
        return self._free[1]

    def _spend(self, nbytes: int) -> None:
        # Writes between two statvfs calls still use the disk.
        t, free = self._free
        self._free = (t, free - nbytes)

    def admit(self, schema_type: str, nbytes: int) -> None:
        """Make room for ``nbytes`` more of ``schema_type`` under every storage limit.

        Raises:
            StorageFull: a limit would be passed and the type's policy is
                ``reject``, or ``delete_oldest`` found nothing more to delete.
        """
        cfg = self.registry.get(schema_type).config
        s = self.config.recorder
        # Each limit is tested inline first: the common case, room everywhere, builds nothing.
        if cfg.max_bytes and self.usage.of(schema_type) + nbytes > cfg.max_bytes:
            self._room(schema_type, schema_type, lambda: self.usage.of(schema_type) + nbytes > cfg.max_bytes,
                       f"types.{schema_type}.max_bytes ({cfg.max_bytes} bytes) reached")
        if s.max_total_bytes and self.usage.total() + nbytes > s.max_total_bytes:
            self._room(schema_type, None, lambda: self.usage.total() + nbytes > s.max_total_bytes,
                       f"recorder.max_total_bytes ({s.max_total_bytes} bytes) reached")
        if s.min_free_bytes:
            if self._free_bytes() - nbytes < s.min_free_bytes:
                self._room(schema_type, None, lambda: self._free_bytes() - nbytes < s.min_free_bytes,
                           f"free disk space below recorder.min_free_bytes ({s.min_free_bytes} bytes)")
            self._spend(nbytes)

    def _room(self, schema_type: str, scope: str | None, over: Callable[[], bool], why: str) -> None:
        if not over():
            return
        if self.registry.get(schema_type).config.on_limit == "delete_oldest":
            if self._delete_oldest(scope, over, why):
                return
            if self.sealer.busy.is_set():
                # the segments just sealed are not in the catalog yet: let the sealer catch up once
                self.sealer.wait_idle(5.0)
                if self._delete_oldest(scope, over, why):
                    return
        raise StorageFull(schema_type, why + self._unpublished_note())

    def _unpublished_note(self) -> str:
        """``"; N sealed segments (B bytes) wait for publication ..."`` when a publication backlog holds space."""
        p = self.config.publish
        if p is None:
            return ""
        waiting = [s.manifest for s in self.catalog.search() if self.sealer.keep(s.manifest)]
        if not waiting:
            return ""
        size = sum(data_bytes(m) for m in waiting)
        return (f"; {len(waiting)} sealed segments ({size} bytes) wait for publication to {p.table_root} "
                f"and are kept until published (recorder stats: publish)")

    def _delete_oldest(self, scope: str | None, over: Callable[[], bool], why: str) -> bool:
        """Delete sealed segments, oldest first, until ``over()`` is false; True if it got there."""
        for seg in self.catalog.search(schema_type=scope):
            m = seg.manifest
            if m["format"] == "parquet" and m["state"] != "converted":
                continue  # still being converted: not ours to delete yet
            if self.registry.specs.get(m["schema_type"]) is None:
                continue
            if self.registry.get(m["schema_type"]).config.on_limit != "delete_oldest":
                continue  # never delete another type's data against its own policy
            if self.sealer.keep(m):
                continue  # not yet in the lake: the local copy is the only one
            self.sealer.delete(m, f"storage limit: {why}")
            self._free = (0.0, 0)
            if not over():
                return True
        return False

    def close(self) -> None:
        """Flush and close every file (head checkpoints included), then release the root."""
        if self.root_fd < 0:
            return
        try:
            for w in self.writers.values():
                w.close()
            self.sealer.stop()
            self.sealer.join(timeout=60)
            self.catalog.close()
            q = self.quarantine
            self.event("recorder_stop", {"quarantined": q.count, "quarantine_dropped": q.dropped})
            q.close()
            self._audit.close()
        except StorageFull:
            raise
        finally:
            _durable.close(self._state_fd)
            _durable.close(self._lock_fd)
            _durable.close(self.internal_fd)
            _durable.close(self.root_fd)
            self.root_fd = -1

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
