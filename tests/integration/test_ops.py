"""What users and operators meet first: their own model, log lines, a tidy start and stop, Prometheus metrics."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from recorder import Client, RejectedError, read
from recorder.schema.endpoints import endpoints
from recorder.schema.config import default_config_text, load_config
from recorder.protocol import decode_record
from recorder.testing import sample_message

from .service_support import Procs, clean_env, wait_for

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "a3cp"
PLAIN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) recorder\.[a-z]+: .+")


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


def run_dir(root: Path, config: Path | None = None) -> Path:
    """The run directory (sockets and endpoint lock) a recorder on ``root`` uses."""
    return Path(endpoints(load_config(config), str(root)).run_dir)


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


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_clean_stop_logs_start_and_stop_and_leaves_no_run_files(procs: Procs, data_root: Path, fmt: str) -> None:
    """`recorder run` logs a start and a clean-stop line with time, level and component (plain or JSON),
    and after a clean stop its sockets, lock and run directory are gone."""
    sup = procs.supervisor(data_root, extra=["--log-format", fmt])
    where = run_dir(data_root)
    assert (where / "lock").exists() and (where / "control").exists()
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0, sup.describe()
    assert not where.exists(), sorted(os.listdir(where))
    lines = [ln for ln in sup.err if ln.strip()]
    if fmt == "plain":
        assert all(PLAIN.fullmatch(ln) for ln in lines), lines
        seen = [(m.group(1), ln.split(" ", 3)[2].rstrip(":"), ln) for ln in lines if (m := PLAIN.match(ln))]
    else:
        objs = [json.loads(ln) for ln in lines]
        assert all({"time", "level", "component", "message", "pid"} <= set(o) for o in objs), objs
        seen = [(o["level"], o["component"], o["message"]) for o in objs]
    assert any(c == "recorder.supervisor" and "supervising" in text for _lv, c, text in seen), seen
    assert any(c == "recorder.service" and "recording into" in text for _lv, c, text in seen), seen
    assert any(c == "recorder.service" and "stopped cleanly" in text for _lv, c, text in seen), seen
    assert any(c == "recorder.supervisor" and "stopped cleanly" in text for _lv, c, text in seen), seen
    assert {lv for lv, _c, _t in seen} == {"INFO"}, seen


def test_refused_start_creates_or_leaves_nothing(procs: Procs, tmp_path: Path) -> None:
    """A config whose model does not import is refused (exit 2) before the data root or run directory
    exists; a start the recorder process refuses (exit 2) removes the run directory again."""
    root = tmp_path / "data"
    bad = tmp_path / "bad.toml"
    bad.write_text('[types.note]\nmodel = "no_such_module_for_recorder:Note"\n', encoding="utf-8")
    sup = procs.supervisor(root, extra=["--config", str(bad)], ready=False)
    assert sup.wait(30) == 2, sup.describe()
    assert "types.note.model" in sup.stderr() and len(sup.err) == 1, sup.err
    assert not root.exists() and not run_dir(root, bad).exists()

    refused = tmp_path / "curve.toml"
    refused.write_text(default_config_text().replace(
        "[recorder]\n", '[recorder]\ncurve_server_secret = "missing.key_secret"\ncurve_clients_dir = "nowhere"\n', 1),
        encoding="utf-8")
    sup = procs.supervisor(root, extra=["--config", str(refused)], ready=False)
    assert sup.wait(30) == 2, sup.describe()
    assert "missing.key_secret" in sup.stderr()
    assert not run_dir(root, refused).exists()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One scrape of a Prometheus endpoint: (sample name, labels) -> value."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=20) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of a scrape (a KeyError names what is missing)."""
    return metrics[(name, frozenset(labels.items()))]


def test_metrics_scrape_across_a_recorder_restart(procs: Procs, data_root: Path,
                                                  clients: Callable[..., Client]) -> None:
    """The supervisor's /metrics reports the recorder's figures, recorder_up 0 while it does not answer,
    and counters that move again after a restart (restarts 0 -> 1)."""
    sup = procs.supervisor(data_root, extra=["--metrics", "127.0.0.1:0"])
    url: Any = wait_for(lambda: next((json.loads(ln[len("METRICS "):])["url"] for ln in sup.out
                                      if ln.startswith("METRICS ")), None), 10, "the METRICS line")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    c = clients(data_root, timeout=30)
    for i in range(20):
        c.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
    c.flush(timeout=30)
    m = scrape(url)
    t = {"schema_type": "a3cp_message"}
    assert value(m, "recorder_up") == 1 and value(m, "recorder_restarts_total") == 0
    assert value(m, "recorder_records_total", **t) == 20
    assert value(m, "recorder_ack_latency_seconds_count", **t) == 20
    assert value(m, "recorder_batch_size_sum", **t) == 20
    assert value(m, "recorder_ack_latency_seconds_bucket", le="+Inf", **t) == 20
    assert value(m, "recorder_queue_depth", **t) == 0 and value(m, "recorder_disk_free_bytes") > 0
    child = sup.first_ready["pid"]
    os.kill(child, signal.SIGSTOP)
    try:
        m = scrape(url)
        assert value(m, "recorder_up") == 0 and value(m, "recorder_restarts_total") == 0
        assert ("recorder_records_total", frozenset(t.items())) not in m
    finally:
        os.kill(child, signal.SIGKILL)
    assert sup.next_ready(30)["pid"] != child
    for i in range(20, 30):
        c.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
    c.record(b'{"not": "known"}', schema_type="no_such_type", schema_version="1.0.0")
    with pytest.raises(RejectedError):
        c.flush(timeout=30)
    m = scrape(url)
    assert value(m, "recorder_up") == 1 and value(m, "recorder_restarts_total") == 1
    assert value(m, "recorder_records_total", **t) == 10  # a new process: counting from zero again
    assert value(m, "recorder_ack_latency_seconds_count", **t) == 10
    assert value(m, "recorder_rejected_total", schema_type="(unregistered)", code="unknown_schema") == 1
