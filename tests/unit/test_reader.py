"""Reading records back (filters, order across files) and verifying journals, in Python and from the CLI."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from unit_support import journal_path, line_starts

from recorder import CorruptionError, Store, read, verify
from recorder.cli import main
from recorder.storage.journal import Journal
from recorder.reading.reader import journal_files, verify_file
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp
from recorder.protocol import Record
from recorder.storage.writer import Entry


def populate(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """Record an interleaving of types, users and sessions; returns (schema_type, record) in write order."""
    sent: list[tuple[str, dict[str, Any]]] = []
    plan = [
        ("a3cp_message", "elias01", "s1"), ("audit_event", "elias01", "s1"), ("a3cp_message", "mia02", "s9"),
        ("raw_action", "elias01", "s2"), ("a3cp_message", "elias01", "s2"), ("audit_event", "mia02", "s9"),
        ("a3cp_message", "elias01", "s1"), ("raw_action", "mia02", "s9"), ("base", "mia02", "s9"),
    ]
    with Store(None, data_root=root) as s:
        for i, (kind, user, session) in enumerate(plan):
            if kind == "a3cp_message":
                rec = sample_message(user, session, i)
            elif kind == "audit_event":
                rec = sample_audit(user, session, i=i)
            elif kind == "raw_action":
                rec = sample_raw_action(user, session, i)
            else:
                rec = {k: v for k, v in sample_audit(user, session, i=i).items() if k != "event_type"}
            rec["timestamp"] = timestamp(60 * i)  # one minute apart
            s.record(rec, schema_type=kind)
            sent.append((kind, rec))
    return sent


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """A data root holding a mix of types, users and sessions, and what was sent to it."""
    root = tmp_path / "data"
    return root, populate(root)


def test_read_merges_files_in_insertion_order(populated: tuple[Path, list[tuple[str, dict[str, Any]]]]) -> None:
    """read() yields records from many files in the order they were recorded (by sequence number)."""
    root, sent = populated
    got = list(read(root))
    assert len({e["schema_type"] + e["user_id"] + str(e["session_id"]) for e in got}) > 4  # many files
    assert [(e["schema_type"], e["record"]) for e in got] == sent
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"schema_type": "a3cp_message"}, lambda t, r: t == "a3cp_message"),
        ({"user_id": "mia02"}, lambda t, r: r["user_id"] == "mia02"),
        ({"session_id": "s1"}, lambda t, r: r["session_id"] == "s1"),
        ({"schema_type": "a3cp_message", "user_id": "elias01", "session_id": "s1"},
         lambda t, r: t == "a3cp_message" and r["user_id"] == "elias01" and r["session_id"] == "s1"),
        ({"since": timestamp(120)}, lambda t, r: r["timestamp"] >= timestamp(120)),
        ({"until": timestamp(120)}, lambda t, r: r["timestamp"] < timestamp(120)),
        ({"since": timestamp(60), "until": timestamp(240)},
         lambda t, r: timestamp(60) <= r["timestamp"] < timestamp(240)),
        ({"since": datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)}, lambda t, r: r["timestamp"] >= timestamp(300)),
        ({"user_id": "nobody"}, lambda t, r: False),
    ],
    ids=["type", "user", "session", "all-three", "since", "until", "range", "since-datetime", "no-match"],
)
def test_read_filters(populated: tuple[Path, list[tuple[str, dict[str, Any]]]], filters: dict[str, Any],
                      keep: Any) -> None:
    """read() keeps exactly the records matching type, user, session and [since, until), in order."""
    root, sent = populated
    got = [(e["schema_type"], e["record"]) for e in read(root, **filters)]
    assert got == [(t, r) for t, r in sent if keep(t, r)]


@pytest.mark.parametrize("since", ["2026-01-01T00:05:00", "2026-01-01T00:05", datetime(2026, 1, 1, 0, 5)],
                         ids=["naive-str", "minutes", "naive-datetime"])
def test_read_takes_bounds_without_zone_as_utc(populated: tuple[Path, list[tuple[str, dict[str, Any]]]],
                                                since: Any) -> None:
    """A since/until bound without a time zone is taken as UTC instead of failing to compare."""
    root, sent = populated
    got = [e["record"] for e in read(root, since=since)]
    assert got == [r for _t, r in sent if r["timestamp"] >= timestamp(300)]


def test_cli_read_accepts_a_bare_date(populated: tuple[Path, list[tuple[str, dict[str, Any]]]],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder read --until 2026-01-02` (a date, no zone) works and keeps the earlier records."""
    root, sent = populated
    assert main(["read", str(root), "--until", "2026-01-02"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(sent)


def test_read_leaves_out_internal_logs(populated: tuple[Path, list[tuple[str, dict[str, Any]]]]) -> None:
    """read() of a data root yields records, not the recorder's own audit or quarantine lines."""
    root, sent = populated
    assert {e["schema_type"] for e in read(root)} == {t for t, _ in sent}
    assert all(p.parts[len(root.parts)] != "_recorder" for p in journal_files([root]))


def test_read_of_a_subdirectory(populated: tuple[Path, list[tuple[str, dict[str, Any]]]]) -> None:
    """read() of a directory below the root yields only the records stored there."""
    root, sent = populated
    got = [e["record"] for e in read(root / "logs" / "users" / "mia02")]
    # raw_action segments live under data/ in the shipped layout
    assert got == [r for t, r in sent if r["user_id"] == "mia02" and t != "raw_action"]


def test_read_skips_an_unfinished_batch(tmp_path: Path) -> None:
    """Whole lines of a batch that never got its commit mark are not yielded (they were never acknowledged)."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=0), schema_type="a3cp_message")
        entries = []
        for i in (1, 2, 3):
            acc = s.check(Record("inproc", 0, "a3cp_message", json.dumps(sample_message(i=i)).encode()))
            entries.append(Entry(acc, s.seq.take(), 1_700_000_000_000_000_000, "p", i))
        s.writers["a3cp_message"].write(entries)
    path = journal_path(root)
    data = path.read_bytes()
    path.write_bytes(data[: line_starts(data)[4]])  # header, record 0, and 2 of the 3 lines of the batch
    assert [e["record"] for e in read(root)] == [sample_message(i=0)]


def test_strict_read_raises_at_a_line_that_is_not_json(tmp_path: Path) -> None:
    """With strict=True, a whole line in the middle of a file that is not JSON raises CorruptionError with its
    line and offset."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        for i in range(3):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    data = path.read_bytes()
    starts = line_starts(data)
    path.write_bytes(data[: starts[2]] + b"not json\n" + data[starts[3]:])
    with pytest.raises(CorruptionError) as info:
        list(read(root, strict=True))
    assert (info.value.line, info.value.offset) == (3, starts[2])


# -- verify ------------------------------------------------------------------------

def test_verify_counts_every_journal_including_internal_logs(
        populated: tuple[Path, list[tuple[str, dict[str, Any]]]]) -> None:
    """verify() checks every journal under the root, the audit and quarantine logs included."""
    root, _sent = populated
    n, problems = verify([root])
    assert problems == []
    assert n == len(journal_files([root], internal=True))
    assert {"audit.jsonl", "quarantine.jsonl"} <= {p.name for p in journal_files([root], internal=True)}


def write_lines(directory: Path, batches: list[list[bytes]]) -> Path:
    """Write batches of raw line bodies through a Journal; returns the file path (no checkpoint)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        j = Journal(dfd, "t.jsonl", "t.jsonl", hashing=True, fsync=False)
        j.open({"schema_type": "t", "hash": "sha256"})
        for batch in batches:
            j.append(batch)
        os.close(j.fd)
    finally:
        os.close(dfd)
    return directory / "t.jsonl"


def test_verify_reports_sequence_going_backwards(tmp_path: Path) -> None:
    """A line whose sequence number does not increase is reported at that line."""
    path = write_lines(tmp_path, [[b'{"seq":5'], [b'{"seq":3']])
    problem = verify_file(path)
    assert problem is not None and problem.line == 3 and "sequence" in problem.reason


def test_verify_reports_an_unfinished_final_batch(tmp_path: Path) -> None:
    """A file ending with whole lines but no commit mark is reported as an incomplete batch."""
    path = write_lines(tmp_path, [[b'{"seq":1'], [b'{"seq":2', b'{"seq":3', b'{"seq":4']])
    data = path.read_bytes()
    path.write_bytes(data[: line_starts(data)[4]])
    problem = verify_file(path)
    assert problem is not None and "incomplete" in problem.reason and problem.line == 4


def test_verify_reports_a_torn_final_line(tmp_path: Path) -> None:
    """A final line without its newline is reported with its line and offset."""
    path = write_lines(tmp_path, [[b'{"seq":1'], [b'{"seq":2']])
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    problem = verify_file(path)
    assert problem is not None
    assert (problem.line, problem.offset) == (3, line_starts(data)[2]) and "torn" in problem.reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b'{"a":1}\n', "not a recorder journal"), (b"\xff\xfe\n", "header")],
    ids=["empty", "foreign-jsonl", "binary"],
)
def test_verify_reports_files_that_are_not_journals(tmp_path: Path, content: bytes, reason: str) -> None:
    """An empty file, a foreign JSONL file or binary junk is reported at line 1, without raising."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    problem = verify_file(path)
    assert problem is not None and problem.line == 1 and reason in problem.reason


def test_cli_verify_clean_root_exits_0(populated: tuple[Path, list[tuple[str, dict[str, Any]]]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder verify ROOT` on an intact root exits 0 and says how many files it checked."""
    root, _sent = populated
    assert main(["verify", "-q", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 with problems" in out and "BAD" not in out


def test_cli_verify_names_file_line_and_offset(populated: tuple[Path, list[tuple[str, dict[str, Any]]]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder verify` exits 1 and prints the file, line and byte offset of a changed byte."""
    root, _sent = populated
    path = journal_path(root, user="elias01", session="s1")
    data = bytearray(path.read_bytes())
    starts = line_starts(bytes(data))
    data[starts[2] + 30] ^= 0x02
    path.write_bytes(bytes(data))
    assert main(["verify", "-q", str(root)]) == 1
    out = capsys.readouterr().out
    bad = [ln for ln in out.splitlines() if ln.startswith("BAD")]
    assert bad == [f"BAD  {path}: line 3 (byte {starts[2]}): line hash mismatch (the line was altered)"]
    assert "1 with problems" in out


def test_cli_verify_reports_set_aside_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder verify` reports a file the recorder set aside as damaged."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=0), schema_type="a3cp_message")
    path = journal_path(root)
    data = bytearray(path.read_bytes())
    data[line_starts(bytes(data))[1] + 30] ^= 0x02
    path.write_bytes(bytes(data))
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=1), schema_type="a3cp_message")
    assert main(["verify", "-q", str(root)]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out and "a3cp_message.jsonl.damaged-" in out


def test_cli_read_prints_jsonl(populated: tuple[Path, list[tuple[str, dict[str, Any]]]],
                               capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder read` prints one JSON envelope per line, filtered like read()."""
    root, sent = populated
    assert main(["read", str(root), "--type", "a3cp_message", "--user", "elias01",
                 "--since", timestamp(60)]) == 0
    out = capsys.readouterr().out
    got = [json.loads(ln) for ln in out.splitlines()]
    assert out.endswith("\n") and len(out.splitlines()) == len(got)
    assert [e["record"] for e in got] == [
        r for t, r in sent if t == "a3cp_message" and r["user_id"] == "elias01" and r["timestamp"] >= timestamp(60)
    ]
    assert got and all(set(e) >= {"seq", "schema_type", "record"} for e in got)


def test_cli_read_session_filter(populated: tuple[Path, list[tuple[str, dict[str, Any]]]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder read --session` keeps only that session's records."""
    root, sent = populated
    assert main(["read", str(root), "--session", "s9", "--until", timestamp(480)]) == 0
    got = [json.loads(ln)["record"] for ln in capsys.readouterr().out.splitlines()]
    assert got == [r for _t, r in sent if r["session_id"] == "s9" and r["timestamp"] < timestamp(480)]
