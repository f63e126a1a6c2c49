"""The chained journal: framing, recovery of torn tails, damage detection, head checkpoints."""

from __future__ import annotations

import hashlib
import json
import re
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_support import audit_events, canon, journal_path, line_starts, lines, scaled

from recorder import Store, read, verify
from recorder.schema.config import default_config_text, parse_config
from recorder.storage.journal import GENESIS, Journal, check_line
from recorder.reading.reader import verify_file
from recorder.testing import sample_audit, sample_message, sample_raw_action

HEADER: dict[str, Any] = {"schema_type": "test", "hash": "sha256"}
FIXTURE_HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def opened(directory: Path, name: str = "j.jsonl", hashing: bool = True,
           header: dict[str, Any] | None = None) -> Iterator[tuple[Journal, Any]]:
    """Open (or recover) a journal in ``directory``; yields it and what recovery did, closes both fds."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    j = Journal(dfd, name, name, hashing=hashing, fsync=False)
    try:
        rec = j.open(header or dict(HEADER, hash="sha256" if hashing else "none"))
        yield j, rec
    finally:
        if j.fd >= 0:
            j.close()
        os.close(dfd)


def body(seq: int, payload: str) -> bytes:
    """An open JSON object as the writer hands it to the journal."""
    return b'{"seq":%d,"payload":%s' % (seq, json.dumps(payload).encode())


def write_batches(directory: Path, batches: list[list[str]], hashing: bool = True) -> list[int]:
    """Write a header and ``batches`` (payloads) to j.jsonl; returns the file size after each batch."""
    ends: list[int] = []
    seq = 0
    with opened(directory, hashing=hashing) as (j, _rec):
        ends.append(j.size)
        for batch in batches:
            bodies = []
            for payload in batch:
                seq += 1
                bodies.append(body(seq, payload))
            j.append(bodies)
            j.last_seq = seq
            ends.append(j.size)
    (directory / "j.jsonl.head").unlink(missing_ok=True)  # as after a crash: no checkpoint
    return ends


def payloads(path: Path) -> list[str]:
    """The payloads stored in a test journal, in order."""
    return [obj["payload"] for obj in lines(path)[1:]]


_BATCHES = st.lists(
    st.lists(st.text(max_size=30), min_size=1, max_size=4), min_size=1, max_size=4
)


# -- (a) a torn tail at any offset ---------------------------------------------------

@settings(FIXTURE_HYPOTHESIS, max_examples=scaled(150))
@given(batches=_BATCHES, data=st.data())
def test_torn_tail_at_any_offset_recovers_the_committed_batches(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[str]], data: st.DataObject
) -> None:
    """Cutting the file anywhere inside its last batch recovers exactly the batches before it."""
    d = tmp_path_factory.mktemp("torn")
    ends = write_batches(d, batches)
    path = d / "j.jsonl"
    full = path.read_bytes()
    keep = ends[-2]  # the end of the last whole batch before the torn one
    cut = data.draw(st.integers(keep, ends[-1] - 1), label="cut")
    path.write_bytes(full[:cut])
    committed = [p for b in batches[:-1] for p in b]
    with opened(d) as (j, rec):
        assert rec.damaged is None
        assert (rec.cut_offset, rec.cut_bytes) == ((keep, full[keep:cut]) if cut > keep else (-1, b""))
        assert path.read_bytes() == full[:keep]
        assert j.size == keep
        assert j.last_seq == len(committed)
        assert j.head == (lines(path)[-1]["h"])
        j.append([body(len(committed) + 1, "after")])
    assert payloads(path) == committed + ["after"]
    assert verify_file(path) is None


def test_torn_header_is_rewritten(tmp_path: Path) -> None:
    """A file cut inside its header line is cut to nothing and gets a fresh header."""
    ends = write_batches(tmp_path, [])
    path = tmp_path / "j.jsonl"
    path.write_bytes(path.read_bytes()[: ends[0] // 2])
    with opened(tmp_path) as (j, rec):
        assert rec.cut_offset == 0 and len(rec.cut_bytes) == ends[0] // 2
        assert j.head != GENESIS
    assert verify_file(path) is None


# -- (d) zero-filled and garbage tails ---------------------------------------------

@settings(FIXTURE_HYPOTHESIS, max_examples=scaled(80))
@given(batches=_BATCHES, data=st.data(), zeros=st.integers(1, 8192))
def test_zero_filled_tail_is_cut_back(tmp_path_factory: pytest.TempPathFactory, batches: list[list[str]],
                                      data: st.DataObject, zeros: int) -> None:
    """A last batch cut anywhere and followed by zero bytes (an unfinished block) is cut back to the batches before."""
    d = tmp_path_factory.mktemp("zeros")
    ends = write_batches(d, batches)
    path = d / "j.jsonl"
    full = path.read_bytes()
    cut = data.draw(st.integers(ends[-2], ends[-1] - 1), label="cut")
    tail = full[ends[-2]:cut] + b"\0" * zeros
    path.write_bytes(full[: ends[-2]] + tail)
    with opened(d) as (_j, rec):
        assert rec.damaged is None
        assert rec.cut_offset == ends[-2] and rec.cut_bytes == tail
    assert path.read_bytes() == full[: ends[-2]]
    assert verify_file(path) is None


@settings(FIXTURE_HYPOTHESIS, max_examples=scaled(80))
@given(batches=_BATCHES, garbage=st.binary(min_size=1, max_size=300).filter(lambda b: b"\n" not in b))
def test_garbage_tail_without_newline_is_cut_back(tmp_path_factory: pytest.TempPathFactory,
                                                 batches: list[list[str]], garbage: bytes) -> None:
    """Bytes after the last whole line that do not end a line are cut back and returned."""
    d = tmp_path_factory.mktemp("garbage")
    ends = write_batches(d, batches)
    path = d / "j.jsonl"
    full = path.read_bytes()
    path.write_bytes(full + garbage)
    with opened(d) as (_j, rec):
        assert rec.damaged is None
        assert rec.cut_offset == ends[-1] and rec.cut_bytes == garbage
    assert path.read_bytes() == full


@settings(FIXTURE_HYPOTHESIS, max_examples=scaled(80))
@given(batches=_BATCHES, garbage=st.binary(min_size=1, max_size=300), more=st.binary(max_size=50))
def test_garbage_line_after_the_last_commit_never_loses_committed_data(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[str]], garbage: bytes, more: bytes
) -> None:
    """A garbage line after the last commit is either cut (it was never acknowledged) or the file is set aside unchanged."""
    d = tmp_path_factory.mktemp("garbage")
    ends = write_batches(d, batches)
    path = d / "j.jsonl"
    full = path.read_bytes()
    damaged = full + garbage + b"\n" + more
    path.write_bytes(damaged)
    with opened(d) as (_j, rec):
        if rec.damaged is None:
            assert rec.cut_offset == ends[-1] and rec.cut_bytes == damaged[ends[-1]:]
            assert path.read_bytes() == full
        else:
            assert rec.damaged.offset >= ends[-1]
            assert path.read_bytes() == damaged


# -- (b) any single-byte change is reported at the right line ----------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real journal written by a Store: a header and four records of varied shapes."""
    root = tmp_path_factory.mktemp("recorded") / "data"
    with Store(None, data_root=root) as s:
        for i in range(3):
            s.record(sample_message(i=i), schema_type="a3cp_message")
        s.record(dict(sample_message(i=9), annotation={"notes": "caf\u00e9 \u2028 \U0001f600"}),
                 schema_type="a3cp_message")
    return journal_path(root).read_bytes()


@settings(FIXTURE_HYPOTHESIS, max_examples=scaled(200))
@given(data=st.data())
def test_any_single_byte_change_is_reported_at_its_line(recorded: bytes, tmp_path: Path,
                                                         data: st.DataObject) -> None:
    """Changing any one byte of a journal makes verify report the line (and line start) holding that byte."""
    offset = data.draw(st.integers(0, len(recorded) - 1), label="offset")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != recorded[offset]), label="byte")
    changed = bytearray(recorded)
    changed[offset] = new
    path = tmp_path / "changed.jsonl"
    path.write_bytes(bytes(changed))
    problem = verify_file(path)
    assert problem is not None
    line = recorded.count(b"\n", 0, offset) + 1
    assert (problem.line, problem.offset) == (line, line_starts(recorded)[line - 1]), problem.reason


@pytest.mark.parametrize("where", ["last-line-body", "last-line-hash", "final-newline", "first-byte"])
def test_change_in_the_final_line_is_detected(recorded: bytes, tmp_path: Path, where: str) -> None:
    """A change inside the final line (or its newline) is reported at that line."""
    last_start = line_starts(recorded)[-1]
    offset = {"last-line-body": last_start + 10, "last-line-hash": len(recorded) - 5,
              "final-newline": len(recorded) - 1, "first-byte": 0}[where]
    changed = bytearray(recorded)
    changed[offset] ^= 0x01
    path = tmp_path / "changed.jsonl"
    path.write_bytes(bytes(changed))
    problem = verify_file(path)
    assert problem is not None
    assert problem.line == recorded.count(b"\n", 0, offset) + 1


def test_unchanged_journal_verifies(recorded: bytes, tmp_path: Path) -> None:
    """The untouched journal verifies clean, and each line checks its own hash."""
    path = tmp_path / "ok.jsonl"
    path.write_bytes(recorded)
    assert verify_file(path) is None
    for ln in recorded.splitlines():
        assert check_line(ln, True)[0] is not None


# -- (c) every example model round-trips -----------------------------------------

_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
_KINDS = st.sampled_from(["a3cp_message", "raw_action", "audit_event"])


def sample(kind: str, user: str, session: str, i: int) -> dict[str, Any]:
    """One example record of ``kind`` from recorder.testing."""
    if kind == "a3cp_message":
        return sample_message(user, session, i)
    if kind == "raw_action":
        return sample_raw_action(user, session, i, frames=1 + i % 5)
    return sample_audit(user, session, "session_end" if i % 2 else "session_start", i)


@settings(FIXTURE_HYPOTHESIS, max_examples=scaled(50))
@given(items=st.lists(st.tuples(_KINDS, _IDS, _IDS, st.integers(0, 10**6)), min_size=1, max_size=6))
def test_every_example_model_round_trips(tmp_path_factory: pytest.TempPathFactory,
                                         items: list[tuple[str, str, str, int]]) -> None:
    """Example records of every model are read back unchanged, in the order they were written."""
    root = tmp_path_factory.mktemp("roundtrip") / "data"
    sent = [(kind, sample(kind, user, session, i)) for kind, user, session, i in items]
    with Store(None, data_root=root) as s:
        seqs = [s.record(rec, schema_type=kind) for kind, rec in sent]
    got = list(read(root))
    assert [(e["schema_type"], canon(e["record"])) for e in got] == [(k, canon(r)) for k, r in sent]
    assert [e["seq"] for e in got] == seqs
    assert verify([root])[1] == []


def test_unhashed_journal_round_trips_and_recovers(tmp_path: Path) -> None:
    """With hash = "none" lines carry no hashes, verify passes, and a torn tail is still cut back."""
    text = default_config_text().replace('hash = "sha256"', 'hash = "none"')
    cfg = parse_config(text, "nohash.toml")
    root = tmp_path / "data"
    with Store(cfg, data_root=root) as s:
        for i in range(3):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    assert all("h" not in obj and "prev" not in obj for obj in lines(path))
    assert verify([root])[1] == []
    full = path.read_bytes()
    path.write_bytes(full[:-7])
    with Store(cfg, data_root=root) as s:
        s.record(sample_message(i=3), schema_type="a3cp_message")
    assert [e["record"] for e in read(root)] == [sample_message(i=i) for i in (0, 1, 3)]


# -- recovery through the Store: cut bytes are kept, damage sets the file aside -----

def torn_after_checkpoint(root: Path, cut_back: int) -> tuple[bytes, bytes]:
    """Record 3 records, close, record a 4th, close; then tear the 4th and restore the first checkpoint.

    This is the state a crash during the 4th write leaves. Returns (the file's
    committed bytes, the torn bytes).
    """
    with Store(None, data_root=root) as s:
        for i in range(3):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    committed = path.read_bytes()
    checkpoint = Path(str(path) + ".head").read_bytes()
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=3), schema_type="a3cp_message")
    full = path.read_bytes()
    torn = full[len(committed) : len(full) - cut_back]
    path.write_bytes(committed + torn)
    Path(str(path) + ".head").write_bytes(checkpoint)
    return committed, torn


@pytest.mark.parametrize("cut_back", [1, 2, 100, 900])
def test_store_cuts_a_torn_tail_and_keeps_the_cut_bytes(tmp_path: Path, cut_back: int) -> None:
    """On start, a torn final batch is cut back to the last commit; the cut bytes are kept under _recorder/torn/."""
    root = tmp_path / "data"
    committed, torn = torn_after_checkpoint(root, cut_back)
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=4), schema_type="a3cp_message")
    kept = list((root / "_recorder" / "torn").iterdir())
    assert [p.read_bytes() for p in kept] == [torn]
    assert journal_path(root).read_bytes().startswith(committed)
    assert [e["record"] for e in read(root)] == [sample_message(i=i) for i in (0, 1, 2, 4)]
    cut = [e["record"] for e in audit_events(root) if e["event_type"] == "torn_tail_cut"]
    assert len(cut) == 1
    assert cut[0]["offset"] == len(committed) and cut[0]["bytes"] == len(torn)
    assert cut[0]["kept_as"] == f"_recorder/torn/{kept[0].name}"
    assert verify([root])[1] == []


def test_store_cuts_a_torn_multi_line_batch(tmp_path: Path) -> None:
    """A batch of several lines torn after its first whole line is cut back entirely (it was never acknowledged)."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=0), schema_type="a3cp_message")
    path = journal_path(root)
    committed = path.read_bytes()
    with Store(None, data_root=root) as s:
        from recorder.protocol import Record
        from recorder.storage.writer import Entry

        entries = []
        for i in (1, 2, 3):
            acc = s.check(Record("inproc", 0, "a3cp_message", json.dumps(sample_message(i=i)).encode()))
            entries.append(Entry(acc, s.seq.take(), 1_700_000_000_000_000_000, "p", i))
        s.writers["a3cp_message"].write(entries)
        checkpoint_free = path.read_bytes()
    starts = line_starts(checkpoint_free)
    assert len(starts) == 5
    path.write_bytes(checkpoint_free[: starts[3] + 10])  # lines 1-2 of the batch whole, the 3rd torn
    Path(str(path) + ".head").unlink()
    with Store(None, data_root=root):
        pass
    assert path.read_bytes() == committed
    assert [e["record"] for e in read(root)] == [sample_message(i=0)]


def flip(path: Path, offset: int) -> bytes:
    """Change the byte at ``offset`` (an 'x' becomes a 'y', anything else has its low bit flipped)."""
    data = bytearray(path.read_bytes())
    data[offset] = ord("y") if data[offset] == ord("x") else data[offset] ^ 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("line", [1, 3, 6])
def test_damage_before_the_tail_sets_the_file_aside(tmp_path: Path, line: int) -> None:
    """A changed byte in any committed line (mid-file or the last one) sets the file aside read-only, untruncated."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        for i in range(5):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    starts = line_starts(path.read_bytes())
    assert len(starts) == 6
    damaged = flip(path, starts[line - 1] + 40)
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=5), schema_type="a3cp_message")
    aside = list(path.parent.glob("a3cp_message.jsonl.damaged-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == damaged  # nothing acknowledged was truncated
    assert stat.S_IMODE(aside[0].stat().st_mode) & 0o222 == 0  # read-only
    header = lines(path)[0]
    assert header["follows_damaged"] == aside[0].name
    assert [e["record"] for e in read(root)] == [sample_message(i=5)]
    events = [e["record"] for e in audit_events(root) if e["event_type"] == "file_set_aside"]
    assert len(events) == 1
    assert events[0]["path"] == "logs/users/elias01/sessions/sess_demo/a3cp_message.jsonl"
    assert events[0]["moved_to"] == aside[0].name
    assert events[0]["offset"] == starts[line - 1]
    _n, problems = verify([root])
    assert [p.path for p in problems] == [str(aside[0])]


def test_new_file_after_set_aside_verifies_before_close(tmp_path: Path) -> None:
    """The fresh file that replaces a damaged one verifies clean even before the store is closed."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        for i in range(4):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    flip(path, line_starts(path.read_bytes())[2] + 40)
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=5), schema_type="a3cp_message")
        assert verify_file(path) is None  # a stale checkpoint of the damaged file must not apply


# -- (f) removed trailing lines and the head checkpoint -----------------------------

@pytest.mark.parametrize("removed", [1, 2])
def test_removed_trailing_lines_are_detected_by_the_checkpoint(tmp_path: Path, removed: int) -> None:
    """After a clean close, cutting whole lines off the end is reported through the .head checkpoint."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        for i in range(4):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    data = path.read_bytes()
    path.write_bytes(data[: line_starts(data)[-removed]])
    problem = verify_file(path)
    assert problem is not None and "removed" in problem.reason
    assert problem.offset == line_starts(data)[-removed]


def test_removed_trailing_lines_without_checkpoint_are_not_detectable(tmp_path: Path) -> None:
    """Without its checkpoint a chain cannot see removed trailing lines (the documented limit)."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        for i in range(4):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    data = path.read_bytes()
    path.write_bytes(data[: line_starts(data)[-1]])
    Path(str(path) + ".head").unlink()
    assert verify_file(path) is None


def test_checkpoint_vouching_for_a_changed_line_is_reported(tmp_path: Path) -> None:
    """A checkpoint whose head no longer matches the line at its offset is reported."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=0), schema_type="a3cp_message")
    head = Path(str(journal_path(root)) + ".head")
    anchor = json.loads(head.read_bytes())
    head.write_bytes(json.dumps(dict(anchor, head="0" * 64)).encode())
    problem = verify_file(journal_path(root))
    assert problem is not None and "checkpoint" in problem.reason


def test_reopen_refuses_to_continue_a_file_with_removed_lines(tmp_path: Path) -> None:
    """On start, a file shorter than its checkpoint vouches for is set aside, not continued (which would hide it)."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        for i in range(4):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    path = journal_path(root)
    data = path.read_bytes()
    shortened = data[: line_starts(data)[-1]]
    path.write_bytes(shortened)
    with Store(None, data_root=root) as s:
        s.record(sample_message(i=9), schema_type="a3cp_message")
    aside = list(path.parent.glob("a3cp_message.jsonl.damaged-*"))
    assert [p.read_bytes() for p in aside] == [shortened]
    assert [e["record"] for e in read(root)] == [sample_message(i=9)]


@pytest.mark.parametrize("into_last_batch", [1, 700_000, 1_300_000, 2_100_000])
def test_torn_tail_is_found_behind_lines_larger_than_the_scan_chunk(tmp_path: Path, into_last_batch: int) -> None:
    """Recovery finds the last commit even when lines are larger than the 1 MiB scan chunk."""
    big = "x" * 700_000
    ends = write_batches(tmp_path, [["a"], [big, big], [big, big, big]])
    path = tmp_path / "j.jsonl"
    full = path.read_bytes()
    cut = ends[-2] + into_last_batch
    assert cut < ends[-1]
    path.write_bytes(full[:cut])
    with opened(tmp_path) as (j, rec):
        assert rec.damaged is None and rec.cut_offset == ends[-2]
        assert j.last_seq == 3
    assert path.read_bytes() == full[: ends[-2]]
    assert verify_file(path) is None


def test_files_closed_and_reopened_by_the_writer_stay_consistent(tmp_path: Path) -> None:
    """With max_open_files = 1 the writer closes and reopens files constantly; every record is kept and verifies."""
    text = default_config_text().replace("max_open_files = 128", "max_open_files = 1")
    assert "max_open_files = 1 " in text
    root = tmp_path / "data"
    sent = []
    with Store(parse_config(text, "lru.toml"), data_root=root) as s:
        for i in range(12):
            rec = sample_message(session=f"s{i % 3}", i=i)
            s.record(rec, schema_type="a3cp_message")
            sent.append(rec)
    assert [e["record"] for e in read(root)] == sent
    assert verify([root])[1] == []
    assert not list(root.rglob("*.damaged-*"))


def format_doc_line_checks() -> tuple[str, list[str]]:
    """The hashed-prefix expression and the byte checks docs/FORMAT.md gives a verifier, as written there."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    start = doc.index("- after that comma every line ends")
    bullet = doc[start:doc.index("(without the newline", start)]
    snippets = [s.replace("\n  ", " ") for s in re.findall(r"`([^`]+)`", bullet.replace("\n  ", " "))]
    (digest,) = [s for s in snippets if s.startswith("h = ")]
    checks = [s for s in snippets if s.startswith("line[") and "==" in s]
    return digest, checks


def test_a_verifier_written_from_format_md_accepts_every_line_of_a_good_recording(store: Store) -> None:
    """The slices docs/FORMAT.md gives (copied from its text, evaluated as written) hold for every line,
    header included, of every journal of a recording, and each line's prev is the h of the line before."""
    digest, checks = format_doc_line_checks()
    assert len(checks) >= 2, checks
    for i in range(5):
        store.record(sample_message(i=i), schema_type="a3cp_message")
        store.record(sample_audit(i=i), schema_type="audit_event")
    store.close()
    journals = [p for p in Path(store.root).rglob("*.jsonl")]
    assert len(journals) >= 3
    for path in journals:
        prev = None
        with open(path, "rb") as f:
            for line in f:
                scope: dict[str, Any] = {"line": line, "hashlib": hashlib}
                exec(digest, scope)  # noqa: S102 - the doc's own expression
                for check in checks:
                    assert eval(check, scope), f"{path}: {check} fails on {line[-80:]!r}"  # noqa: S307
                entry = json.loads(line)
                if prev is not None:
                    assert entry["prev"] == prev
                prev = scope["h"]
