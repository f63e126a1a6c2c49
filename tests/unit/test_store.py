"""The in-process Store: one per data root, sequence numbers across restarts, its own audit log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from unit_support import audit_events, journal_path, line_starts

from recorder import RecorderError, Store, ValidationError, read, verify
from recorder.a3cp import A3CPMessage
from recorder.testing import sample_audit, sample_message


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def test_second_store_on_the_same_root_is_refused(tmp_path: Path) -> None:
    """A second Store on a data root already in use is refused with RecorderError naming the holder."""
    root = tmp_path / "data"
    with Store(None, data_root=root):
        with pytest.raises(RecorderError) as info:
            Store(None, data_root=root)
        assert "in use" in str(info.value) and str(os.getpid()) in str(info.value)
    with Store(None, data_root=root) as s:  # free again once the first one is closed
        assert s.record(sample_message(), schema_type="a3cp_message") > 0


def test_refused_store_leaks_no_file_descriptors(tmp_path: Path) -> None:
    """A refused second Store closes every descriptor it opened."""
    root = tmp_path / "data"
    with Store(None, data_root=root):
        before = open_fds()
        for _ in range(3):
            with pytest.raises(RecorderError):
                Store(None, data_root=root)
        assert open_fds() == before


def test_sequence_numbers_keep_increasing_across_restarts(tmp_path: Path) -> None:
    """Sequence numbers only grow, across several close/reopen cycles, and read() keeps insertion order."""
    root = tmp_path / "data"
    seqs: list[int] = []
    sent = []
    for run in range(3):
        with Store(None, data_root=root) as s:
            for i in range(3):
                rec = sample_message(i=10 * run + i)
                seqs.append(s.record(rec, schema_type="a3cp_message"))
                sent.append(rec)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    got = list(read(root))
    assert [e["record"] for e in got] == sent
    assert [e["seq"] for e in got] == seqs
    assert verify([root])[1] == []


def test_each_journal_is_continued_after_restart(tmp_path: Path) -> None:
    """A reopened Store appends to the same file and the chain continues (one header, verifies clean)."""
    root = tmp_path / "data"
    for i in range(3):
        with Store(None, data_root=root) as s:
            s.record(sample_message(i=i), schema_type="a3cp_message")
    data = journal_path(root).read_bytes()
    assert len(line_starts(data)) == 4 and data.count(b'"recorder_journal"') == 1
    assert verify([root])[1] == []


def test_store_writes_its_own_start_and_stop_events(tmp_path: Path) -> None:
    """The store logs recorder_start and recorder_stop events (with quarantine counts) in _recorder/audit.jsonl."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        with pytest.raises(ValidationError):
            s.record(dict(sample_message(), user_id="../x"), schema_type="a3cp_message")
    kinds = [e["event_type"] for e in audit_events(root)]
    assert kinds == ["recorder_start", "recorder_stop"]
    stop = audit_events(root)[-1]["record"]
    assert stop["quarantined"] == 1 and stop["quarantine_dropped"] == 0


def test_close_is_idempotent(tmp_path: Path) -> None:
    """Closing a store twice is harmless and writes one stop event."""
    root = tmp_path / "data"
    s = Store(None, data_root=root)
    s.close()
    s.close()
    assert [e["event_type"] for e in audit_events(root)].count("recorder_stop") == 1


def test_schema_type_is_inferred_from_a_model_instance(tmp_path: Path) -> None:
    """A pydantic model instance is recorded under the type its class is registered for."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(A3CPMessage.model_validate(sample_message()))
    (env,) = list(read(root))
    assert env["schema_type"] == "a3cp_message"
    assert env["record"]["record_id"] == sample_message()["record_id"]


def test_dict_without_schema_type_is_refused(store: Store) -> None:
    """A plain dict without schema_type= is refused: its type cannot be guessed."""
    with pytest.raises(ValidationError) as info:
        store.record(sample_audit())
    assert info.value.field == "schema_type"


def test_records_of_each_type_land_in_their_template_path(tmp_path: Path) -> None:
    """Each type's records go to the file its template names."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(), schema_type="a3cp_message")
        s.record(sample_audit(), schema_type="audit_event")
    assert journal_path(root, "a3cp_message").is_file()
    assert journal_path(root, "audit_event").is_file()


def test_damaged_audit_log_is_set_aside(tmp_path: Path) -> None:
    """A changed byte in the recorder's own audit log sets it aside on start, and the new log verifies."""
    root = tmp_path / "data"
    with Store(None, data_root=root):
        pass
    with Store(None, data_root=root):
        pass
    audit = root / "_recorder" / "audit.jsonl"
    data = bytearray(audit.read_bytes())
    data[data.index(b"recorder_start") + 2] ^= 0x01
    audit.write_bytes(bytes(data))
    with Store(None, data_root=root):
        pass
    assert list((root / "_recorder").glob("audit.jsonl.damaged-*"))
    assert [p.path for p in verify([root])[1] if p.path == str(audit)] == []
