"""The recorder's own logs under ``_recorder/``: the audit log of its events, and the quarantine of rejected input.

Both are hash-chained journals that recover like any other; what their own
recovery did is recorded in the audit log once it is open (``open_logs``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from .._env import iso_ms_now, iso_ns
from ..exceptions import RecorderError
from ..schema.config import RecorderSettings
from ..schema.validation import quarantine_copy, safe_json
from . import INTERNAL_DIR, _durable
from .journal import Journal
from .journal import open_journal

__all__ = ["AuditLog", "Quarantine", "open_logs"]

_log = logging.getLogger("recorder.store")


class AuditLog:
    """The chained log of the recorder's own events (start, stop, recovery, segment lifecycle)."""

    def __init__(self, internal_fd: int, journal: Journal) -> None:
        self.internal_fd = internal_fd
        self.journal = journal
        self.lock = threading.Lock()
        self.dropped = 0  # events that could not be written

    def event(self, kind: str, details: dict[str, Any]) -> None:
        """Record one of the recorder's own events as an AuditEvent.

        Cut bytes (``details["data"]``) are kept in ``_recorder/torn/`` first,
        and a failure there raises: recovery must not cut what it cannot keep.
        A failure to append the event itself is counted in ``dropped``.
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
        with self.lock:
            body = safe_json({"seq": self.journal.last_seq + 1, "received": iso_ns(time.time_ns()),
                              "event_type": kind, "record": record})[:-1]
            try:
                self.journal.append([body])
                self.journal.last_seq += 1
            except RecorderError as e:
                # Events often report a failing disk; losing one must not turn a
                # stored record into a refusal or stop a writer. Counted, and said.
                self.dropped += 1
                _log.error("audit event %r not written: %s", kind, e)

    def close(self) -> None:
        self.journal.close()


class Quarantine:
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


def open_logs(internal_fd: int, header: dict[str, Any], settings: RecorderSettings) -> tuple[AuditLog, Quarantine]:
    """Open (recovering) the audit log and the quarantine; the events of their own recovery go into the audit log."""
    early: list[tuple[str, dict[str, Any]]] = []

    def defer(kind: str, details: dict[str, Any]) -> None:
        early.append((kind, details))

    aj, _ = open_journal(internal_fd, "audit.jsonl", f"{INTERNAL_DIR}/audit.jsonl",
                         {**header, "schema_type": "recorder_audit"}, defer, hashing=True, fsync=True)
    audit = AuditLog(internal_fd, aj)
    qj, _ = open_journal(internal_fd, "quarantine.jsonl", f"{INTERNAL_DIR}/quarantine.jsonl",
                         {**header, "schema_type": "quarantine"}, defer, hashing=True, fsync=True)
    quarantine = Quarantine(qj, settings.quarantine_max_bytes, settings.quarantine_copy_bytes)
    for kind, details in early:
        audit.event(kind, details)
    return audit, quarantine
