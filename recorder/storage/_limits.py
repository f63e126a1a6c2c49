"""Storage limits of one data root: per-type ``max_bytes``, ``max_total_bytes`` and ``min_free_bytes``.

Before a write, ``admit`` makes room under every limit: by the type's policy
it deletes the oldest sealed segments it may (``delete_oldest``: never an
unpublished one, never another type's against its own policy) or refuses
with ``StorageFull``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..exceptions import StorageFull
from ..schema.config import Config
from ..schema.registry import Registry
from . import formats
from .catalog import Segment
from .published import data_bytes
from .segments import Sealer, Usage

__all__ = ["Limits"]


class _Segments(Protocol):
    """What the limits need of the catalog: its sealed segments, oldest first."""

    def search(self, *, schema_type: str | None = None) -> list[Segment]: ...


@dataclass
class Limits:
    """The storage limits of one data root, checked against its usage and free disk space."""

    config: Config
    registry: Registry
    root_fd: int
    usage: Usage
    catalog: _Segments
    sealer: Sealer
    _free: tuple[float, int] = field(default=(0.0, 0), init=False)  # (when, bytes) of the last statvfs

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
            if formats.of(m).pending(m):
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
