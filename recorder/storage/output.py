"""Files written whole or not at all outside a data root: what ``recorder export`` writes.

A thin public face of ``_durable`` (temp file, fsync, rename, directory
fsync) for callers above storage, so they need not reach its private module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from . import _durable

__all__ = ["OutputDir"]


class OutputDir:
    """A directory (made if missing), held open, to create files in atomically."""

    def __init__(self, path: str) -> None:
        self.fd = _durable.open_root(path)

    def write_bytes(self, name: str, data: bytes, label: str) -> None:
        """Create or replace ``name`` with ``data``."""
        _durable.write_new(self.fd, name, data, label)

    def write_with(self, name: str, write: Callable[[BinaryIO], None], label: str) -> None:
        """Create or replace ``name`` with what ``write`` writes into the file object it is given (a library's writer)."""
        _durable.publish(self.fd, name, write, label)

    def close(self) -> None:
        """Let go of the directory."""
        _durable.close(self.fd)
