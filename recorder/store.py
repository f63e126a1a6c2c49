"""An in-process recorder over one data root: registry, writers, quarantine, own audit log.

The recorder service wraps exactly this object (one writer thread per type);
used directly it is a library for single-process producers and for tests.
``Store`` composes the parts (the sequence lease ``storage._lease``, the
audit log and quarantine ``storage._audit``, the storage limits
``storage._limits``, the writers, sealer and catalog) and is the one
in-process API: check, record, reject, event, admit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .storage import INTERNAL_DIR, _durable, formats
from ._env import runtime_env
from .schema._ids import holds_record_id, new_record_id, with_default_version
from .storage.locks import take_lock
from .schema.config import Config, load_config
from .exceptions import RecorderError, StorageFull, ValidationError
from .storage.journal import Journal
from .schema.registry import Registry
from .protocol import Record
from .schema.accept import Accepted, Acceptor
from .schema.validation import encode_record
from .storage.catalog_log import Catalog
from .storage.published import unpublished_check
from .storage.segments import Sealer, Usage
from .storage.dedup import DurableIndex
from .storage._audit import open_logs
from .storage._lease import SeqLease
from .storage._limits import Limits
from .storage._segfiles import SEALED_TAIL, pseqs_after
from .storage.writer import Entry, TypeWriter

__all__ = ["Store", "INTERNAL_DIR"]


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
        self.seq = SeqLease(state_fd)
        self.env = runtime_env(self.config.digest)
        header = {"env": self.env}
        settings = self.config.recorder
        self.audit, self.quarantine = open_logs(self.internal_fd, header, settings)
        self.catalog = Catalog(self.internal_fd, header, self.root, self.event)
        self.usage = Usage()
        self.sealer = Sealer(self.root_fd, self.registry, self.catalog, self.usage, self.event)
        if self.config.publish is not None:
            self.sealer.keep = unpublished_check(self.root, self.config)
        self.limits = Limits(self.config, self.registry, self.root_fd, self.usage, self.catalog, self.sealer)
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
            self.usage.add(m["schema_type"], formats.converted(m).get("bytes", 0)
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
        """Record one of the recorder's own events (start, stop, recovery) as an AuditEvent (``AuditLog.event``)."""
        self.audit.event(kind, details)

    @property
    def events_dropped(self) -> int:
        """Audit events that could not be written."""
        return self.audit.dropped

    @property
    def _audit(self) -> Journal:
        return self.audit.journal

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

    def admit(self, schema_type: str, nbytes: int) -> None:
        """Make room for ``nbytes`` more of ``schema_type`` under every storage limit (``Limits.admit``).

        Raises:
            StorageFull: a limit would be passed and the type's policy is
                ``reject``, or ``delete_oldest`` found nothing more to delete.
        """
        self.limits.admit(schema_type, nbytes)

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
            self.audit.close()
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
