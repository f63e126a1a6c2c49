"""The recorder command refuses wrong input with documented exit codes, and its help says what each option does."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from unit_support import journal_path, line_starts

from recorder import NotARecording, Store, __version__, read_table, verify
from recorder._progress import Progress
from recorder.cli import EXIT_CODES, _parser, main
from recorder.testing import sample_message

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not installed
    sys.path.insert(0, str(REPO))

from benchmarks.__main__ import main as bench  # noqa: E402

PATH_COMMANDS = [
    ["read"],
    ["verify"],
    ["catalog"],
    ["export", "--type", "a3cp_message", "--out", "{tmp}/out.parquet"],
]


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """A data root holding three a3cp_message records of one session."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        for i in range(3):
            s.record(sample_message(i=i), schema_type="a3cp_message")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``recorder ARGV`` in-process: (exit code, stdout, stderr)."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("command", PATH_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("kind", ["missing", "not-a-recording"])
def test_path_commands_refuse_what_is_not_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      command: list[str], kind: str) -> None:
    """read, verify, catalog and export on a missing path or a directory without a recording exit 2 naming it."""
    path = tmp_path / "nonexist"
    if kind == "not-a-recording":
        path.mkdir()
        (path / "notes.txt").write_text("not a journal")
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    rc, out, err = run(capsys, *args[:1], str(path), *args[1:])
    assert rc == 2 and out == ""
    assert str(path) in err and "ERROR recorder.cli" in err
    assert not (tmp_path / "out.parquet").exists()


def test_python_functions_take_a_str_or_a_path(recording: Path) -> None:
    """verify() takes one path as a str or a Path (not a string's characters), and refuses a missing one."""
    assert verify(str(recording)) == verify(recording) == verify([recording])
    files, problems = verify(str(recording))
    assert files >= 3 and problems == []
    with pytest.raises(NotARecording) as info:
        verify("rec1")
    assert info.value.path == "rec1"


def test_read_refuses_an_unknown_type(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder read --type nope` exits 2 naming the type and the types recorded."""
    rc, out, err = run(capsys, "read", str(recording), "--type", "nope")
    assert rc == 2 and out == ""
    assert "'nope'" in err and "a3cp_message" in err


def test_registered_type_with_no_records_reads_nothing(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A type the config registers but nothing recorded yet reads as empty with exit 0."""
    assert run(capsys, "read", str(recording), "--type", "feedback_log") == (0, "", "")


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_time_errors_name_the_option(recording: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    """A --since/--until that is no ISO-8601 time is a usage error (exit 2) naming the option."""
    with pytest.raises(SystemExit) as info:
        main(["read", str(recording), option, "yesterday"])
    assert info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_read_skips_a_malformed_line_reporting_file_and_line(recording: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """One malformed line is reported with its file and line, the good lines are still printed (exit 1);
    --strict makes it fatal."""
    path = journal_path(recording)
    data = path.read_bytes()
    starts = line_starts(data)
    path.write_bytes(data[: starts[2]] + b"not json\n" + data[starts[3]:])
    rc, out, err = run(capsys, "read", str(recording))
    assert rc == 1
    assert [json.loads(ln)["record"] for ln in out.splitlines()] == [sample_message(i=0), sample_message(i=2)]
    assert f"{path}: line 3 (byte {starts[2]})" in err and "WARNING" in err
    rc, out, err = run(capsys, "read", str(recording), "--strict")
    assert rc == 1 and f"{path}: line 3" in err and "ERROR" in err


@pytest.mark.parametrize("out", ["missing/dir/x.parquet", "."], ids=["missing-dir", "a-directory"])
def test_export_never_creates_directories(recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, out: str) -> None:
    """`export --out` into a missing directory, or onto a directory, exits 2 and creates nothing."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _out, err = run(capsys, "export", str(recording), "--type", "a3cp_message", "--out", out)
    assert rc == 2 and "--out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_empty_export_is_a_valid_file_with_the_types_schema(recording: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """Exporting a registered type with no rows writes a valid empty file (Parquet: the type's columns)."""
    out = tmp_path / f"empty.{fmt}"
    rc, _out, err = run(capsys, "export", str(recording), "--type", "feedback_log", "--format", fmt,
                        "--out", str(out))
    assert rc == 0, err
    if fmt == "jsonl":
        assert out.read_bytes() == b""
        return
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert {"seq", "record_id", "record"} <= set(table.column_names)
    assert "entry_id" in {f.name for f in table.schema.field("record").type}


def test_read_table_without_a_match_is_empty_with_the_schema(recording: Path) -> None:
    """read_table() of a type with no files, or with a filter matching nothing, is an empty typed table."""
    for table in (read_table(recording, "feedback_log"), read_table(str(recording), "a3cp_message", user_id="x")):
        assert table.num_rows == 0 and "record" in table.column_names


def test_data_root_option_works_like_the_argument(recording: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Every path command takes --data-root as well as its argument; two different roots are refused."""
    by_arg = run(capsys, "read", str(recording))
    assert by_arg[0] == 0 and run(capsys, "read", "--data-root", str(recording)) == by_arg
    assert run(capsys, "verify", "--data-root", str(recording), "-q")[0] == 0
    assert run(capsys, "catalog", "--data-root", str(recording))[0] == 0
    out = tmp_path / "x.jsonl"
    assert run(capsys, "export", "--data-root", str(recording), "--type", "a3cp_message", "--format", "jsonl",
               "--out", str(out))[0] == 0
    assert len(out.read_bytes().splitlines()) == 3
    rc, _out, err = run(capsys, "read", str(recording), "--data-root", str(tmp_path))
    assert rc == 2 and "--data-root" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder --version` prints the package version and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"recorder {__version__}"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The parser of each subcommand, by name."""
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_has_no_markup_every_option_described_and_the_exit_codes() -> None:
    """Every command's help lists the exit codes, describes every option and shows no RST markup."""
    top = _parser().format_help()
    assert EXIT_CODES.splitlines()[1] in top and "``" not in top
    for name, p in subcommands().items():
        text = p.format_help()
        assert "``" not in text and "exit codes:" in text, name
        for a in p._actions:
            assert a.help and a.help != argparse.SUPPRESS, f"recorder {name} {a.option_strings or a.dest}"
    assert {"run", "stats", "read", "verify", "catalog", "export", "demo"} <= {
        n for n, p in subcommands().items() if any("--data-root" in a.option_strings for a in p._actions)}


def test_stats_without_a_recorder_is_a_runtime_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder stats` with no recorder running exits 3 saying so."""
    rc, out, err = run(capsys, "stats", "--data-root", str(tmp_path / "data"), "--timeout", "0.2")
    assert rc == 3 and out == "" and "no recorder" in err


@pytest.mark.parametrize("kind", ["a-file", "below-a-file"])
def test_run_refuses_a_bad_data_root_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 kind: str) -> None:
    """`recorder run --data-root` on a file (or below one) exits 2 with one log line and creates nothing."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    root = afile if kind == "a-file" else afile / "data"
    rc, out, err = run(capsys, "run", "--data-root", str(root))
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and "not a directory" in err and str(afile) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_demo_refuses_a_non_empty_directory(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder demo --dir` into a non-empty directory exits 2 with the reason, before recording anything."""
    before = sorted(p.name for p in recording.rglob("*"))
    rc, _out, err = run(capsys, "demo", "--dir", str(recording))
    assert rc == 2 and "not empty" in err
    assert sorted(p.name for p in recording.rglob("*")) == before


def test_progress_prints_nothing_into_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    """A progress line is drawn only on a terminal: into a pipe or file nothing is printed."""
    p = Progress(10, "verify")
    for _ in range(10):
        p.advance(1)
    p.done()
    assert capsys.readouterr().err == ""


def test_benchmarks_refuse_an_out_directory_before_running(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m benchmarks compare --out DIR` (or into a missing directory) is refused at once (exit 2)."""
    for out in (str(tmp_path), str(tmp_path / "missing" / "x.json")):
        with pytest.raises(SystemExit) as info:
            bench(["compare", "--out", out])
        assert info.value.code == 2 and "--out" in capsys.readouterr().err
