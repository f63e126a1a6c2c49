"""Publication state under the data root: recorder id, lock, the state file, and the backlog.

Nothing here imports deltalake: the recorder process reads this state to
keep unpublished segments out of retention and ``delete_oldest``, and
``recorder stats`` shows it. Only the publisher writes it, while it holds
the publication lock (``_recorder/publish.lock``).

``_recorder/publish.json`` holds, per table, the highest catalog number
published (the table's application transaction version for this recorder),
plus counters and the last error for ``stats``. It is not hash-chained: it
is a cache of what the tables say, restored from their transaction
versions whenever it is missing or behind. Reading it (what is published)
lives below the store, in ``recorder.storage.published``, for retention.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..storage import INTERNAL_DIR, _durable
from .._env import iso_ns
from ..schema._paths import check_identifier
from ..storage.locks import take_lock
from ..schema.config import PublishSettings
from ..storage.published import STATE, data_bytes, load_state, publish_types, published, table_name, tables_of
from ..exceptions import ConfigError, UnsafeIdentifier

__all__ = ["INTERNAL", "LOCK", "STATE", "Backlog", "backlog", "catalog_segments", "data_bytes", "load_state",
           "lock_publication", "publish_types", "published", "recorder_id", "save_state", "table_name",
           "tables_of"]

INTERNAL = INTERNAL_DIR
LOCK = "publish.lock"
_ID_FILE = "recorder_id"


def recorder_id(root: str, settings: PublishSettings) -> str:
    """The configured ``recorder_id``, else the one kept under the data root (made once, at first use)."""
    if settings.recorder_id:
        return settings.recorder_id
    path = Path(root) / INTERNAL / _ID_FILE
    try:
        rid = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        rid = ""
    if not rid:
        root_fd = _durable.open_root(root)
        try:
            dir_fd = _durable.open_dirs(root_fd, [INTERNAL], INTERNAL)
            try:
                rid = f"rec-{secrets.token_hex(6)}"
                _durable.write_new(dir_fd, _ID_FILE, rid.encode() + b"\n", f"{INTERNAL}/{_ID_FILE}")
            finally:
                _durable.close(dir_fd)
        finally:
            _durable.close(root_fd)
    try:
        return check_identifier("publish", "recorder_id", rid)
    except UnsafeIdentifier as e:
        raise ConfigError(str(path), "recorder_id", e.reason) from e


def lock_publication(root: str) -> int:
    """Hold the publication lock of ``root`` until the returned fd is closed.

    Raises:
        RecorderError: another publisher (the service's, or a ``recorder publish``) holds it.
    """
    os.makedirs(os.path.join(root, INTERNAL), exist_ok=True)
    return take_lock(os.path.join(root, INTERNAL, LOCK),
                     f"{root}: another publisher holds the publication lock", mode=0o644)


def save_state(root: str, state: dict[str, Any]) -> None:
    """Replace the publication state atomically (temp file, fsync, rename, directory fsync)."""
    state = {**state, "updated": iso_ns(time.time_ns())}
    root_fd = _durable.open_root(root)
    try:
        dir_fd = _durable.open_dirs(root_fd, [INTERNAL], INTERNAL)
        try:
            _durable.write_new(dir_fd, STATE, msgspec.json.encode(state), f"{INTERNAL}/{STATE}")
        finally:
            _durable.close(dir_fd)
    finally:
        _durable.close(root_fd)


def catalog_segments(root: str, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Manifests of every sealed (not deleted, unless asked) segment in the catalog, by catalog number.

    Reads ``_recorder/catalog.jsonl`` only; a torn last line is skipped.
    """
    path = Path(root) / INTERNAL / "catalog.jsonl"
    found: dict[str, dict[str, Any]] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    for line in data.split(b"\n")[1:]:
        try:
            e = msgspec.json.decode(line) if line else None
        except msgspec.DecodeError:
            continue  # a torn last line: the recorder cuts it back at its next start
        if not isinstance(e, dict):
            continue
        m = e.get("manifest") or {}
        if e.get("op") in ("seal", "convert"):
            found[m["path"]] = m
        elif e.get("op") == "delete" and not include_deleted:
            found.pop(m.get("path", ""), None)
    return sorted(found.values(), key=lambda m: int(m.get("number") or 0))


@dataclass
class Backlog:
    """Sealed segments of publishing types that no table holds yet."""

    segments: int = 0
    bytes: int = 0
    oldest: str | None = None  # the sealed_at of the oldest waiting segment


def backlog(manifests: list[dict[str, Any]], types: set[str], tables: dict[str, Any]) -> Backlog:
    """What of ``manifests`` waits for publication."""
    b = Backlog()
    for m in manifests:
        if m.get("schema_type") in types and not published(m, tables):
            b.segments += 1
            b.bytes += data_bytes(m)
            b.oldest = b.oldest or m.get("sealed_at")
    return b
