"""fdatasync of several files at once: the disk overlaps them, one thread each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .journal import Journal

__all__ = ["SyncPool"]


class SyncPool:
    """Syncs the journals of one batch together; its threads start on first need."""

    def __init__(self, name: str, fsync: bool) -> None:
        self.name = name
        self.fsync = fsync
        self._pool: ThreadPoolExecutor | None = None

    def sync_all(self, journals: list[Journal]) -> None:
        """fdatasync every journal; raises the first error once all are done."""
        if len(journals) == 1 or not self.fsync:
            for j in journals:
                j.sync()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"sync-{self.name}")
        errors = [f.exception() for f in [self._pool.submit(j.sync) for j in journals]]
        for e in errors:
            if e is not None:
                raise e

    def shutdown(self) -> None:
        """Stop the threads (a later batch starts them again)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
