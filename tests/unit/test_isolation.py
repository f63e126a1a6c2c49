"""Failure isolation in the writer: one unwritable destination costs only its own records.

Each test has a negative control that switches the guard off and shows the
check failing: without per-destination handling a blocked user's directory
fails the whole batch; without the st_nlink check a record written into a
file whose directory was removed is acknowledged and lost.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import msgspec
import pytest

from recorder import Store, read
from recorder.exceptions import DurabilityError, Unwritable
from recorder.protocol import Record
from recorder.testing import sample_message
from recorder.storage.writer import Entry, TypeWriter

import recorder.storage.writer as writer_module


def _entries(s: Store, users: list[str]) -> list[Entry]:
    out = []
    for i, user in enumerate(users, 1):
        m = sample_message(user, "sess01", i)
        acc = s.check(Record("p1", i, "a3cp_message", msgspec.json.encode(m)))
        out.append(Entry(acc, s.seq.take(), time.time_ns(), "p1", i))
    return out


def _stored_pseqs(root: Path) -> list[int]:
    return sorted(e["pseq"] for e in read(root, schema_type="a3cp_message"))


def _blocked_batch(root: Path) -> tuple[dict[int, Unwritable], list[Entry]]:
    with Store(None, data_root=root) as s:
        users = root / "logs" / "users"
        users.mkdir(parents=True)
        (users / "blocked").write_text("a file where a directory should be\n")
        entries = _entries(s, ["good", "blocked", "good", "blocked", "other"])
        refused = s.writers["a3cp_message"].write(entries)
    return refused, entries


def test_an_unwritable_destination_refuses_only_its_records_in_a_batch(tmp_path: Path) -> None:
    """A batch of three users, one whose directory is a regular file: that user's two records are refused
    (Unwritable naming the path), the three others are durable."""
    refused, entries = _blocked_batch(tmp_path / "data")
    assert sorted(refused) == [entries[1].seq, entries[3].seq]
    assert all(isinstance(e, Unwritable) and "users/blocked" in str(e) for e in refused.values())
    assert _stored_pseqs(tmp_path / "data") == [1, 3, 5]


def test_negative_control_without_isolation_the_whole_batch_fails(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: with the per-destination guard off, the blocked user fails the batch and the
    other users' records are not written."""
    def unguarded(self: TypeWriter, g, touched, filled, moved, refused, now):  # type: ignore[no-untyped-def]
        self._write_group(g, touched, filled, moved)

    monkeypatch.setattr(TypeWriter, "_write_isolated", unguarded)
    with pytest.raises(DurabilityError):
        _blocked_batch(tmp_path / "data")
    assert _stored_pseqs(tmp_path / "data") == []


def _record_after_rmtree(root: Path) -> tuple[bool, list[int]]:
    """Record #1, remove its session directory, record #2: (was #2 acknowledged, pseqs found on disk)."""
    s = Store(None, data_root=root)
    s.record(sample_message("user01", "sess01", 1), schema_type="a3cp_message", producer="p1", pseq=1)
    shutil.rmtree(root / "logs" / "users" / "user01" / "sessions" / "sess01")
    try:
        s.record(sample_message("user01", "sess01", 2), schema_type="a3cp_message", producer="p1", pseq=2)
        acked = True
    except Unwritable:
        acked = False
    try:
        s.close()
    except DurabilityError:
        pass  # the negative control: the still-open journal's checkpoint has no directory left
    return acked, _stored_pseqs(root)


def test_a_record_written_into_a_removed_directory_is_never_acknowledged(tmp_path: Path) -> None:
    """The journal's directory removed while it is open: the next record is refused, not acknowledged."""
    acked, stored = _record_after_rmtree(tmp_path / "data")
    assert not acked and 2 not in stored


def test_negative_control_without_the_nlink_check_an_acknowledged_record_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: skipping the st_nlink check acknowledges record #2, which is nowhere on disk."""
    monkeypatch.setattr(writer_module, "_unlinked", lambda fd: False)
    acked, stored = _record_after_rmtree(tmp_path / "data")
    assert acked and 2 not in stored
