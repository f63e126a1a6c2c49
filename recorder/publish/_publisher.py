"""The publisher: each sealed segment, in catalog order, committed once into the table of its type and MAJOR.

One round reads the catalog, and for every segment of a publishing type
that a table does not hold yet (by the local state, then by the table's
application transaction version for ``{recorder_id}:{table}``), commits
its rows with the segment's catalog number as the transaction version,
then records that in the publication state. A kill between the commit and
the state write is harmless: the next round finds the version in the table
and skips the segment. Rounds stop at the first segment not ready yet
(a Parquet type still converting), so each table receives this recorder's
segments strictly in order.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from .._env import __version__, iso_ns
from ..schema.config import Config
from ..exceptions import PublishError, RecorderIdConflict
from ..schema.registry import Registry
from ._lake import Lake, storage_options
from ..storage import formats
from ._state import (backlog, catalog_segments, data_bytes, load_state, publish_types, published, recorder_id,
                     save_state, tables_of)
from ._table import lake_tables, read_segment

__all__ = ["Publisher", "app_id"]

_log = logging.getLogger("recorder.publish")
#: test seams (never set in production): a named fault point that SIGKILLs this process, and the two
#: broken publishers the negative controls need
FAULT_ENV = "RECORDER_PUBLISH_FAULT"
UNSAFE_ENV = "RECORDER_PUBLISH_UNSAFE"


def app_id(rid: str, table: str) -> str:
    """The Delta application transaction id of one recorder in one table."""
    return f"{rid}:{table}"


class _Fault:
    """``RECORDER_PUBLISH_FAULT=point[:n]``: SIGKILL this process the n-th time it reaches ``point``."""

    def __init__(self) -> None:
        spec = os.environ.get(FAULT_ENV, "")
        point, _, n = spec.partition(":")
        self.point = point
        self.left = int(n) if n.isdigit() else 1

    def __call__(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


class Publisher:
    """Publishes one data root's sealed segments; the caller holds the publication lock.

    Args:
        root: the data root.
        config: its config (``config.publish`` must be set).
        on_segment: called with each segment's manifest once it is published (progress).

    Raises:
        PublishError: the config has no ``[publish]`` table.
    """

    def __init__(self, root: str, config: Config, on_segment: Callable[[dict[str, Any]], None] | None = None) -> None:
        if config.publish is None:
            raise PublishError(config.source, "no [publish] table in the config")
        self.root = os.path.realpath(root)
        self.config = config
        self.settings = config.publish
        self.registry = Registry.from_config(config)
        self.types = publish_types(config)
        self.recorder_id = recorder_id(self.root, self.settings)
        self.lake = Lake(self.settings.table_root, storage_options(self.settings))
        self.state = load_state(self.root)
        self.state.setdefault("tables", {})
        self.state.update({"recorder_id": self.recorder_id, "table_root": self.settings.table_root})
        for key in ("segments", "rows", "bytes", "conflicts_retried"):
            self.state.setdefault(key, 0)
        self.on_segment = on_segment
        self.fault = _Fault()
        self.unsafe = os.environ.get(UNSAFE_ENV, "")
        self.host = socket.gethostname()
        self.checked: set[str] = set()  # tables whose transaction version was compared with the state

    # -- one round ----------------------------------------------------------------------
    def pending(self) -> list[dict[str, Any]]:
        """Manifests of publishing types not yet in every table, by catalog number."""
        tables = self.state["tables"]
        return [m for m in catalog_segments(self.root)
                if m.get("schema_type") in self.types and m.get("number") and not published(m, tables)]

    def round(self) -> int:
        """Publish every ready segment; returns how many were committed (or found already committed).

        Raises:
            PublishError: the store failed (the state says how far it got).
            RecorderIdConflict: a table holds this recorder id with another chain history.
        """
        done = 0
        numbers: set[int] = set()
        for m in self.pending():
            n = int(m["number"])
            if n in numbers:
                raise PublishError(str(m["path"]), f"catalog number {n} is held by two segments; not publishing")
            numbers.add(n)
            if formats.of(m).pending(m):
                break  # still converting: later segments wait, so each table gets them in order
            self._publish(m)
            done += 1
        self._finish_round()
        return done

    def _publish(self, m: dict[str, Any]) -> None:
        n, stype = int(m["number"]), str(m["schema_type"])
        tables = self.state["tables"]
        rows = lake_tables(read_segment(self.root, m, self.registry.get(stype)), self.recorder_id, n, stype)
        meta = {"recorder.manifest": {
            "path": m["path"], "schema_type": stype, "records": m["records"], "first_seq": m["first_seq"],
            "last_seq": m["last_seq"], "chain_head": m["chain_head"], "sha256": m["sha256"],
            "recorder_version": __version__, "host": self.host}, "recorder.id": self.recorder_id}
        for table in tables_of(m):
            if int(tables.get(table, 0)) >= n:
                continue
            self._catch_up(table)
            if int(tables.get(table, 0)) >= n:
                continue  # committed before a kill that came before the state was written
            if self.unsafe == "state_first":  # negative control: the state claims it before the commit
                tables[table] = n
                save_state(self.root, self.state)
                self.fault("before_commit")
            data = rows.get(table)
            if data is not None:
                before = self.lake.conflicts
                self.lake.commit(table, data, app_id(self.recorder_id, table), n, meta,
                                 check_version=self.unsafe != "skip_txn_check")
                self.state["conflicts_retried"] += self.lake.conflicts - before
            self.fault("after_commit")
            tables[table] = n
        self.state["segments"] += 1
        self.state["rows"] += int(m["records"])
        self.state["bytes"] += data_bytes(m)
        self.state["last_success"] = iso_ns(time.time_ns())
        self.state["last_error"] = None
        save_state(self.root, self.state)
        if self.on_segment is not None:
            self.on_segment(m)

    def _catch_up(self, table: str) -> None:
        """Take the table's transaction version into the state, after checking it is this device's history.

        A version above the state's is a commit whose state write a kill
        cut off (or a lost state file): each such commit must carry the
        digest of the local segment of that number. Anything else means
        another device publishes under this recorder id.
        """
        if table in self.checked or self.unsafe == "skip_txn_check":
            return
        tables = self.state["tables"]
        dt = self.lake.open(table)
        have = int(tables.get(table, 0))
        version = self.lake.txn_version(dt, app_id(self.recorder_id, table))
        if dt is not None and version > have:
            local = {int(m.get("number") or 0): m for m in catalog_segments(self.root, include_deleted=True)}
            for number, commit in sorted(self.lake.commits_of(dt, app_id(self.recorder_id, table)).items()):
                if have < number <= version:
                    theirs = (commit.get("recorder.manifest") or {}).get("sha256")
                    mine = local.get(number, {}).get("sha256")
                    if theirs != mine:
                        raise RecorderIdConflict(self.lake.uri(table), self.recorder_id, number,
                                                 "the table holds a segment of this number with another digest "
                                                 "(is this a cloned device image?)")
            tables[table] = version
            _log.info("%s: found segments up to %d already committed; state caught up", table, version)
        self.checked.add(table)

    def restore(self) -> dict[str, int]:
        """Rebuild the state's per-table versions from the tables' transaction versions (``catalog --rebuild``).

        Each table's commits above zero are checked against the local
        segments as after a kill. Returns table -> version found.
        """
        self.state["tables"] = {}
        self.checked.clear()
        tables = sorted({t for m in catalog_segments(self.root, include_deleted=True)
                         if m.get("schema_type") in self.types for t in tables_of(m)})
        for table in tables:
            self._catch_up(table)
        self._finish_round()
        return {t: int(self.state["tables"].get(t, 0)) for t in tables}

    def _finish_round(self) -> None:
        manifests = catalog_segments(self.root)
        b = backlog(manifests, self.types, self.state["tables"])
        self.state["backlog"] = {"segments": b.segments, "bytes": b.bytes, "oldest_sealed_at": b.oldest}
        self.state["buffer_s"] = self._buffer_s(manifests)
        self.state["conflicts_retried"] = int(self.state.get("conflicts_retried", 0))
        save_state(self.root, self.state)

    def failed(self, error: BaseException) -> None:
        """Record a failed round in the state (shown by ``recorder stats``), then forget what was checked."""
        self.state["last_error"] = str(error)[:500]
        self.state["last_error_at"] = iso_ns(time.time_ns())
        self.checked.clear()  # the store may come back with other versions: look again
        try:
            manifests = catalog_segments(self.root)
            b = backlog(manifests, self.types, self.state["tables"])
            self.state["backlog"] = {"segments": b.segments, "bytes": b.bytes, "oldest_sealed_at": b.oldest}
            self.state["buffer_s"] = self._buffer_s(manifests)
            save_state(self.root, self.state)
        except OSError as e:
            _log.warning("cannot write the publication state: %s", e)

    def _buffer_s(self, manifests: list[dict[str, Any]], window_s: float = 600.0) -> float | None:
        """Seconds of recording the local disk still holds at the last ``window_s``'s sealing rate (None: idle)."""
        cutoff = iso_ns(time.time_ns() - int(window_s * 1e9))
        rate = sum(data_bytes(m) for m in manifests if str(m.get("sealed_at") or "") >= cutoff) / window_s
        if rate <= 0:
            return None
        s = self.config.recorder
        st = os.statvfs(self.root)
        room = st.f_bavail * st.f_frsize - s.min_free_bytes
        if s.max_total_bytes:
            room = min(room, s.max_total_bytes - sum(data_bytes(m) for m in manifests))
        return max(0.0, room / rate)
