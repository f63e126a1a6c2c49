"""What users meet first: their own model, recorded from another directory."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recorder import Client, read
from recorder.protocol import decode_record
from recorder.testing import sample_message

from .service_support import Procs, clean_env, wait_for

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "a3cp"


def walkthrough() -> list[tuple[str, str]]:
    """The fenced code blocks (language, text) of the README's "Your own model" section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Your own model\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def run_cli(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A ``recorder ...`` command line of the README, run with this interpreter in ``cwd``."""
    args = shlex.split(line.split("#", 1)[0])
    assert args[0] == "recorder", line
    return subprocess.run([sys.executable, "-m", "recorder", *args[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=clean_env())


def test_own_model_walkthrough_from_another_directory(procs: Procs, tmp_path: Path) -> None:
    """The README's own-model walkthrough works as written from the directory above the model's: a model
    without record_id or schema_version, three config lines, record, read back, export."""
    blocks = walkthrough()
    assert [lang for lang, _ in blocks] == ["python", "toml", "sh", "python", "sh"]
    (model, config, run, producer, reading) = (b for _, b in blocks)
    assert "record_id" not in model and "schema_version" not in model
    assert len(config.strip().splitlines()) == 3
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodels.py").write_text(model, encoding="utf-8")
    (project / "my.toml").write_text(config, encoding="utf-8")
    run_args = shlex.split(run)
    assert run_args[:2] == ["recorder", "run"] and "--data-root" in run_args
    root = tmp_path / run_args[run_args.index("--data-root") + 1]
    config_arg = run_args[run_args.index("--config") + 1]
    sup = procs.supervisor(root, extra=["--config", config_arg], cwd=tmp_path)
    p = procs.spawn("producer", ["-c", producer], cwd=tmp_path)
    assert p.wait(60) == 0, p.describe()
    read_line, export_line = [ln for ln in reading.splitlines() if ln.strip()]
    r = run_cli(read_line, tmp_path)
    assert r.returncode == 0, r.stderr
    (env,) = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert env["record"] == {"timestamp": "2026-01-31T12:00:00Z", "text": "hello"}
    assert str(uuid.UUID(env["record_id"])) == env["record_id"]
    assert (env["schema_type"], env["schema_version"], env["user_id"], env["session_id"]) == \
        ("note", "1.0.0", "u1", "s1")
    r = run_cli(export_line, tmp_path)
    assert r.returncode == 0, r.stderr
    table = pq.read_table(tmp_path / "notes.parquet")
    assert table.column("record_id").to_pylist() == [env["record_id"]]
    assert [rec["text"] for rec in table.column("record").to_pylist()] == ["hello"]
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0, sup.describe()


def test_client_makes_a_record_id_once_and_resends_it(procs: Procs, data_root: Path,
                                                     clients: Callable[..., Client]) -> None:
    """A record without record_id sent while no recorder runs gets its id before the first send, and the
    resent frame stores that same id."""
    c = clients(data_root, timeout=30, user_id=None, session_id=None)  # the record carries its own
    raw = (CORPUS / "feedback_log" / "input.json").read_bytes()  # an upstream record without record_id
    c.record(raw, schema_type="feedback_log", schema_version="1.0.0")
    (_pseq, frame, _t0), = list(c._pending)
    made = decode_record(frame).record_id
    assert made is not None and str(uuid.UUID(made)) == made
    procs.supervisor(data_root)
    c.flush(timeout=30)
    assert [e["record_id"] for e in read(data_root, schema_type="feedback_log")] == [made]
