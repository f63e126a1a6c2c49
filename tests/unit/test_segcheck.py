"""Segment verification: manifests, Parquet digests, links across segments, the catalog, leftovers."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from recorder import Store, verify
from recorder.reading._segcheck import check_segments
from recorder.storage.formats.parquet import inspect as _parquet_rows
from recorder.storage.catalog_log import rebuild
from recorder.reading.reader import Problem
from recorder.testing import sample_message

SESSION = Path("logs/elias01/sess_demo")
CONFIG = """
[recorder]
min_free_bytes = 0

[types.msg]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{user_id}/{session_id}/msg_{segment:04d}.jsonl"
rotate_records = 3
retention_s = %(retention)s

[types.msg.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"

[types.pq]
model = "recorder.a3cp:A3CPMessage"
format = "parquet"
path = "logs/{user_id}/{session_id}/pq_{segment:04d}.parquet"
rotate_records = 3
retention_s = %(retention)s
keep_journal = %(keep)s
"""


def write_config(directory: Path, retention: float = 0, keep_journal: bool = False) -> Path:
    path = directory / "recorder.toml"
    path.write_text(CONFIG % {"retention": retention, "keep": str(keep_journal).lower()})
    return path


def record(store: Store, first: int, n: int) -> None:
    """``n`` records of each type; with rotate_records = 3 every third seals a segment."""
    for i in range(first, first + n):
        store.record(sample_message(i=i), schema_type="msg", producer="p", pseq=i)
        store.record(sample_message(i=i), schema_type="pq", producer="p", pseq=i)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed recording: segments 0-2 of each type sealed (pq ones converted), segment 3 open."""
    base = tmp_path_factory.mktemp("pristine")
    with Store(write_config(base), data_root=base / "data") as store:
        record(store, 0, 10)
    return base / "data"


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def seg(root: Path) -> Path:
    return root / SESSION


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def where(problems: list[Problem]) -> list[str]:
    return [p.path for p in problems]


def one_problem_at(root: Path, path: Path) -> Problem:
    """check_segments reports exactly one problem, at ``path``; returns it."""
    problems = check_segments(str(root))
    assert where(problems) == [str(path)], "\n".join(map(str, problems))
    return problems[0]


# -- clean recordings ----------------------------------------------------------------------

def test_a_clean_recording_verifies_clean(root: Path, seg: Path) -> None:
    """Sealed, converted and open segments of a fresh recording give no problem, in verify() too."""
    assert (seg / "pq_0002.parquet").is_file() and (seg / "msg_0002.manifest.json").is_file()
    assert (seg / "msg_0003.jsonl").is_file() and not (seg / "msg_0003.manifest.json").exists()
    assert check_segments(str(root)) == []
    _, problems = verify([root])
    assert problems == []


def test_retention_deletions_leave_a_clean_recording(tmp_path: Path) -> None:
    """Segments deleted by retention are explained by their tombstones: before and after more recording."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, retention=0.001), data_root=root) as store:
        record(store, 0, 10)
        store.sealer.wait_idle(10)
        deleted = store.sealer.retention(time.time() + 60)
        assert deleted == 6
        record(store, 10, 6)  # segments 4 and 5 follow tombstoned ones
    seg = root / SESSION
    assert sorted(p.name for p in seg.glob("*.deleted.json"))[:3] == [
        "msg_0000.deleted.json", "msg_0001.deleted.json", "msg_0002.deleted.json"]
    assert not (seg / "pq_0001.parquet").exists() and not (seg / "msg_0001.jsonl").exists()
    assert check_segments(str(root)) == []
    assert verify([root])[1] == []


def test_a_subdirectory_of_a_data_root_is_checked_against_the_root_catalog(root: Path, seg: Path) -> None:
    """check_segments on a directory inside a data root finds manifests by their root-relative paths."""
    assert check_segments(str(root / "logs")) == []
    flip(seg / "pq_0000.parquet", 50)
    assert where(check_segments(str(root / "logs" / "elias01"))) == [str(seg / "pq_0000.parquet")]


def test_a_kept_journal_is_checked_beside_its_parquet_file(tmp_path: Path) -> None:
    """With keep_journal, a converted segment's journal must stay and match, and so must its Parquet file."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, keep_journal=True), data_root=root) as store:
        record(store, 0, 4)
    seg = root / SESSION
    assert (seg / "pq_0000.jsonl").is_file() and (seg / "pq_0000.parquet").is_file()
    assert check_segments(str(root)) == []
    flip(seg / "pq_0000.jsonl", 300)
    assert "sealed journal changed" in one_problem_at(root, seg / "pq_0000.jsonl").reason
    (seg / "pq_0000.jsonl").unlink()
    assert "sealed journal is missing" in one_problem_at(root, seg / "pq_0000.jsonl").reason


# -- altered files ---------------------------------------------------------------------------

@pytest.mark.parametrize("where_in_file", ["header", "record", "last hash"])
def test_a_flipped_byte_in_a_sealed_journal_is_reported_at_the_journal(
        root: Path, seg: Path, where_in_file: str) -> None:
    """A sealed journal that changed is reported at that journal, with the line verify_file finds."""
    path = seg / "msg_0001.jsonl"
    data = path.read_bytes()
    offset = {"header": 20, "record": data.index(b'"capture_id"') + 20, "last hash": len(data) - 10}[where_in_file]
    flip(path, offset)
    problem = one_problem_at(root, path)
    assert "sealed journal changed after it was sealed" in problem.reason
    assert problem.offset >= 0 and problem.line >= 1
    _, problems = verify([root])
    assert where(problems) == [str(path)]  # once, not once per checker


def test_a_journal_appended_to_after_sealing_is_reported(root: Path, seg: Path) -> None:
    """A whole, well-chained line added to a sealed journal still differs from its manifest."""
    path = seg / "msg_0000.jsonl"
    lines = path.read_bytes().splitlines(True)
    (seg / "msg_0000.jsonl.head").unlink()  # the checkpoint would already tell
    path.write_bytes(b"".join(lines[:-1]))  # cut a whole committed line: chain still valid
    problem = one_problem_at(root, path)
    assert "2 records but the manifest says 3" in problem.reason


@pytest.mark.parametrize("where_in_file", ["magic", "data", "footer"])
def test_a_flipped_byte_in_a_parquet_file_is_reported_at_the_parquet_file(
        root: Path, seg: Path, where_in_file: str) -> None:
    """A Parquet file whose digest differs from its manifest is reported at the Parquet file."""
    path = seg / "pq_0001.parquet"
    size = path.stat().st_size
    flip(path, {"magic": 1, "data": size // 2, "footer": size - 6}[where_in_file])
    problem = one_problem_at(root, path)
    assert "Parquet file changed after it was published" in problem.reason


@pytest.mark.parametrize("name", ["msg_0001.manifest.json", "pq_0001.manifest.json"])
def test_a_flipped_byte_anywhere_in_a_manifest_is_reported_at_the_manifest(root: Path, seg: Path, name: str) -> None:
    """Whatever byte of a manifest changes, the manifest is blamed (not the data it describes)."""
    path = seg / name
    data = path.read_bytes()
    for offset in range(0, len(data), 7):
        flip(path, offset)
        try:
            problem = one_problem_at(root, path)
            assert "manifest" in problem.reason, problem
        finally:
            path.write_bytes(data)
    assert check_segments(str(root)) == []


def test_a_manifest_whose_data_was_rewritten_consistently_blames_the_data(root: Path, seg: Path) -> None:
    """Journal and manifest changed together (the catalog still holds the original): the journal is blamed."""
    path = seg / "msg_0001.jsonl"
    lines = path.read_bytes().splitlines(True)
    (seg / "msg_0001.jsonl.head").unlink()
    path.write_bytes(b"".join(lines[:-1]))
    m = json.loads((seg / "msg_0001.manifest.json").read_bytes())
    m["records"] = 2
    (seg / "msg_0001.manifest.json").write_text(json.dumps(m))
    problems = {p.path: p.reason for p in check_segments(str(root))}
    assert sorted(problems) == [str(path), str(seg / "msg_0001.manifest.json")]
    assert "in records: the manifest was altered" in problems[str(seg / "msg_0001.manifest.json")]
    assert "sealed journal changed after it was sealed" in problems[str(path)]


# -- missing segments and links across segments -------------------------------------------

@pytest.mark.parametrize("stream,gone,data", [
    ("msg", ["msg_0001.jsonl", "msg_0001.jsonl.head", "msg_0001.manifest.json"], "msg_0001.jsonl"),
    ("pq", ["pq_0001.parquet", "pq_0001.manifest.json"], "pq_0001.parquet"),
])
@pytest.mark.parametrize("catalog", ["original", "rebuilt"])
def test_a_middle_segment_deleted_without_a_tombstone_is_missing(
        root: Path, seg: Path, stream: str, gone: list[str], data: str, catalog: str) -> None:
    """Segment 1 gone with neither manifest nor tombstone is reported as missing, whether the catalog knows it or not."""
    for name in gone:
        (seg / name).unlink()
    if catalog == "rebuilt":
        rebuild(root, {})
    problem = one_problem_at(root, seg / data)
    assert f"segment 1 of stream {SESSION.as_posix()}/{stream}_{{segment}}" in problem.reason
    assert "is missing" in problem.reason


def test_a_sealed_journal_deleted_without_a_tombstone_is_missing(root: Path, seg: Path) -> None:
    """A jsonl segment whose journal is gone but whose manifest stays is reported at the journal."""
    (seg / "msg_0002.jsonl").unlink()
    problem = one_problem_at(root, seg / "msg_0002.jsonl")
    assert "sealed journal is missing" in problem.reason


def test_the_first_segment_deleted_without_a_tombstone_is_missing(root: Path, seg: Path) -> None:
    """Segments count from 0: segment 0 gone below present ones is missing too."""
    for name in ("pq_0000.parquet", "pq_0000.manifest.json"):
        (seg / name).unlink()
    rebuild(root, {})
    assert "segment 0 of stream" in one_problem_at(root, seg / "pq_0000.parquet").reason


@pytest.mark.parametrize("stream,files", [
    ("msg", ["msg_0001.jsonl", "msg_0001.jsonl.head", "msg_0001.manifest.json"]),
    ("pq", ["pq_0001.parquet", "pq_0001.manifest.json"]),
])
def test_a_segment_replaced_by_another_recordings_is_reported_where_the_chain_breaks(
        root: Path, seg: Path, tmp_path: Path, stream: str, files: list[str]) -> None:
    """Each file consistent, catalog rebuilt: the chain across segments still shows segment 1 is foreign."""
    other = tmp_path / "other"
    with Store(write_config(tmp_path), data_root=other) as store:
        record(store, 100, 10)
    for name in files:
        shutil.copy(other / SESSION / name, seg / name)
    rebuild(root, {})
    problem = one_problem_at(root, seg / files[-1] if stream == "pq" else seg / files[0])
    assert "chain broken across segments" in problem.reason
    assert "segment 2 does not continue it either" in problem.reason


def test_an_open_segment_that_does_not_continue_the_last_sealed_one_is_reported(
        root: Path, seg: Path, tmp_path: Path) -> None:
    """The open journal (no manifest yet) is linked too: its header prev must be the last sealed head."""
    other = tmp_path / "other"
    with Store(write_config(tmp_path), data_root=other) as store:
        record(store, 100, 10)
    for name in ("msg_0003.jsonl", "msg_0003.jsonl.head"):
        shutil.copy(other / SESSION / name, seg / name)
    problem = one_problem_at(root, seg / "msg_0003.jsonl")
    assert "chain broken across segments: segment 3" in problem.reason


# -- tombstones ----------------------------------------------------------------------------------

@pytest.fixture
def retained(tmp_path: Path) -> Path:
    """A recording whose segments 0-2 of both types were deleted by retention, then recorded on."""
    root = tmp_path / "data"
    with Store(write_config(tmp_path, retention=0.001), data_root=root) as store:
        record(store, 0, 9)
        store.sealer.wait_idle(10)
        assert store.sealer.retention(time.time() + 60) == 6
        record(store, 9, 4)
    return root


def test_a_missing_tombstone_is_reported(retained: Path) -> None:
    """A deletion the catalog records needs its tombstone on disk."""
    tomb = retained / SESSION / "pq_0001.deleted.json"
    tomb.unlink()
    problems = check_segments(str(retained))
    assert where(problems)[0] == str(tomb)
    assert "tombstone is missing" in problems[0].reason


def test_an_altered_tombstone_is_reported_at_the_tombstone(retained: Path) -> None:
    """A tombstone whose manifest digest differs from the catalog's deletion record is blamed."""
    tomb = retained / SESSION / "msg_0002.deleted.json"
    doc = json.loads(tomb.read_bytes())
    doc["manifest"]["sha256"] = "0" * 64
    tomb.write_text(json.dumps(doc))
    assert "tombstone was altered" in one_problem_at(retained, tomb).reason


def test_an_interrupted_deletion_is_reported_at_its_tombstone(root: Path, seg: Path) -> None:
    """A tombstone beside data that is still there (a crash inside Sealer.delete) is reported at the tombstone."""
    m = json.loads((seg / "msg_0001.manifest.json").read_bytes())
    tomb = seg / "msg_0001.deleted.json"
    tomb.write_text(json.dumps({"manifest": m, "reason": "test", "deleted_at": "x"}))
    problem = one_problem_at(root, tomb)
    assert "deletion was interrupted" in problem.reason and "msg_0001.jsonl" in problem.reason


# -- the catalog -----------------------------------------------------------------------------

def test_a_flipped_byte_in_the_catalog_is_reported_at_its_line(root: Path) -> None:
    """The catalog is a chained journal: a changed entry is reported at the catalog, line and byte."""
    cat = root / "_recorder" / "catalog.jsonl"
    lines = cat.read_bytes().splitlines(True)
    flip(cat, len(b"".join(lines[:4])) + 30)
    problem = one_problem_at(root, cat)
    assert problem.line == 5 and problem.offset == len(b"".join(lines[:4]))


def test_a_catalog_missing_entries_is_out_of_date_until_rebuilt(root: Path) -> None:
    """Entries cut off the catalog's end (chain still whole) make it out of date; rebuild repairs it."""
    cat = root / "_recorder" / "catalog.jsonl"
    lines = cat.read_bytes().splitlines(True)
    (root / "_recorder" / "catalog.jsonl.head").unlink()
    cat.write_bytes(b"".join(lines[:-3]))
    problem = one_problem_at(root, cat)
    assert "catalog is out of date" in problem.reason and "run recorder catalog --rebuild" in problem.reason
    rebuild(root, {})
    assert check_segments(str(root)) == []


def test_a_missing_catalog_is_reported(root: Path) -> None:
    """Sealed segments without any catalog: the catalog is named, with the way to rebuild it."""
    (root / "_recorder" / "catalog.jsonl").unlink()
    (root / "_recorder" / "catalog.jsonl.head").unlink()
    assert "run recorder catalog --rebuild" in one_problem_at(root, root / "_recorder" / "catalog.jsonl").reason


# -- leftovers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", [
    "logs/elias01/sess_demo/.pq_0003.parquet.tmp-4242",
    "logs/elias01/sess_demo/.msg_0001.manifest.json.tmp-4242",
    "_recorder/state/.seq.tmp-4242",
    "_recorder/.catalog.rebuild",
])
def test_hidden_temp_files_are_reported_as_leftovers(root: Path, rel: str) -> None:
    """A temp file an interrupted write left anywhere under the root is reported, at that file."""
    (root / rel).write_bytes(b"PAR1 half")
    assert "leftover temporary file" in one_problem_at(root, root / rel).reason



@pytest.mark.parametrize("name", ["msg_0001.manifest.json", "pq_0001.manifest.json", "pq_0001.parquet"])
def test_a_problem_outside_a_journal_line_names_its_place_not_minus_one(root: Path, seg: Path, name: str) -> None:
    """verify prints a manifest's or Parquet file's problem with the field, row group or whole file at
    fault, never 'line -1 (byte -1)'."""
    path = seg / name
    data = path.read_bytes()
    for offset in range(0, len(data), max(1, len(data) // 40)):
        flip(path, offset)
        try:
            problem = one_problem_at(root, path)
            text = str(problem)[len(str(path)):]
            assert "line -1" not in text and "byte -1" not in text, text
            assert text.startswith(f": {problem.where}: ") and problem.where or problem.line >= 1, text
        finally:
            path.write_bytes(data)


def test_parquet_places_are_the_footer_or_the_row_groups(root: Path, seg: Path, tmp_path: Path) -> None:
    """An unreadable Parquet file is placed at its footer; a readable one by its row groups and their rows."""
    rows, where_, why = _parquet_rows(seg / "pq_0001.parquet")
    assert (rows, where_, why) == (3, "row group 0 (3 rows)", "")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1" + b"\0" * 64)
    rows, where_, why = _parquet_rows(bad)
    assert rows is None and where_ == "footer (file metadata)" and why
