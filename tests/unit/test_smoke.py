"""The demo path works in-process: record, read back, verify."""

from __future__ import annotations

from pathlib import Path

from recorder import Store, read, verify
from recorder.testing import sample_message


def test_record_read_verify(tmp_path: Path) -> None:
    """Records written by a Store are read back in order and verify clean."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        seqs = [s.record(sample_message(i=i), schema_type="a3cp_message") for i in range(5)]
    assert seqs == sorted(seqs)
    got = [e["record"]["record_id"] for e in read(root)]
    assert got == [sample_message(i=i)["record_id"] for i in range(5)]
    files, problems = verify([root])
    assert problems == [] and files >= 3
