"""Parquet publication crash safety: hidden temp files, no file under the final name before the rename, I/O errors wrapped."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pytest
from parquet_support import dir_fd  # noqa: F401 - the fixture
from parquet_support import A3CP_MODELS, envelope
from unit_support import write_parquet

from recorder.storage import _durable
from recorder.exceptions import DurabilityError, StorageFull
from recorder.storage.formats import parquet
from recorder.testing import sample_message

@pytest.fixture
def no_fault_hook() -> Iterator[None]:
    yield
    _durable.set_fault_hook(None)


# -- crash safety --------------------------------------------------------------------------------

class Crash(Exception):
    """Stands in for the process dying at a fault point."""


def table_of_messages() -> pa.Table:
    return parquet.to_table([envelope(sample_message(i=i), i) for i in range(3)], A3CP_MODELS)


def test_the_temporary_file_is_hidden_and_gone_after_write(
        tmp_path: Path, dir_fd: int, no_fault_hook: None) -> None:
    """While being written the file has a hidden name no *.parquet glob matches; afterwards only the final file is left."""
    seen: list[list[str]] = []

    def look(point: str) -> None:
        if point == "before_rename":
            seen.append(sorted(os.listdir(tmp_path)))

    _durable.set_fault_hook(look)
    write_parquet(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert len(seen) == 1 and len(seen[0]) == 1
    temp = seen[0][0]
    assert temp.startswith(".") and not temp.endswith(".parquet")
    assert os.listdir(tmp_path) == ["s_000.parquet"]


@pytest.mark.parametrize("point", ["before_fsync", "before_rename"])
def test_a_crash_before_the_rename_leaves_no_file_under_the_final_name(
        tmp_path: Path, dir_fd: int, no_fault_hook: None, point: str) -> None:
    """Dying before the rename leaves at most a hidden temp file, never a (half) file under the final name."""
    def die(p: str) -> None:
        if p == point:
            raise Crash(p)

    _durable.set_fault_hook(die)
    with pytest.raises(Crash):
        write_parquet(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert not (tmp_path / "s_000.parquet").exists()
    assert list(tmp_path.glob("*.parquet")) == []
    assert all(name.startswith(".") for name in os.listdir(tmp_path))


@pytest.mark.parametrize("err,exc", [(errno.ENOSPC, StorageFull), (errno.EIO, DurabilityError)])
def test_an_io_error_while_publishing_is_wrapped_and_cleans_up(
        tmp_path: Path, dir_fd: int, no_fault_hook: None, err: int, exc: type[Exception]) -> None:
    """A full disk or an I/O error during publication raises the recorder's error and leaves no file at all."""
    def fail(p: str) -> None:
        if p == "before_fsync":
            raise OSError(err, os.strerror(err))

    _durable.set_fault_hook(fail)
    with pytest.raises(exc):
        write_parquet(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_inside_the_parquet_writer_is_storage_full(
        tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC raised while pyarrow writes the temp file surfaces as StorageFull and leaves no file behind."""
    def full(self: Any, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(parquet._HashingWriter, "write", full)
    with pytest.raises(StorageFull):
        write_parquet(dir_fd, "s_000.parquet", table_of_messages(), "s")
    assert os.listdir(tmp_path) == []
