"""Helpers for the integration tests: processes, polling, and checks of what is on disk.

Every process a test starts goes through ``Procs`` (the ``procs`` fixture),
which stops it (SIGTERM, then SIGKILL of its process group after a deadline)
even when the test fails or times out.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from recorder import read, verify
from recorder.schema.endpoints import endpoints
from recorder.schema.config import load_config
from recorder.exceptions import RecorderError

HERE = Path(__file__).resolve().parent
PRODUCER = HERE / "_producer.py"
STOP_DEADLINE = 10.0  # seconds a process gets after SIGTERM before its group is SIGKILLed
_MISSING = object()


# -- waiting on conditions ---------------------------------------------------
def wait_for(pred: Callable[[], Any], timeout: float, what: str,
             state: Callable[[], Any] | None = None, interval: float = 0.01) -> Any:
    """Poll ``pred()`` until it returns something truthy, and return that.

    On timeout the test fails, naming ``what`` and the last state seen:
    ``state()`` when given, else the last value (or exception) of ``pred``.
    """
    deadline = time.monotonic() + timeout
    last: Any = _MISSING
    while True:
        try:
            value = pred()
        except Exception as e:  # e.g. a file that does not exist yet
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            seen = state() if state is not None else last
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}; last state seen: {seen!r}")
        time.sleep(interval)


# -- processes -----------------------------------------------------------------
def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any fault switch, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "RECORDER_FAULT"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """A started child: stdout lines (READY lines parsed into a queue), stderr kept."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env,
                                      start_new_session=True, cwd=cwd)
        self.pid = self.popen.pid
        self.ready: queue.Queue[dict[str, Any]] = queue.Queue()
        self.first_ready: dict[str, Any] = {}  # set by Procs when it waited for READY
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, False), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, stream: IO[str], is_stdout: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if is_stdout:
                self.out.append(line)
                if line.startswith("READY "):
                    self.ready.put(json.loads(line[6:]))
            else:
                self.err.append(line)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stderr(self) -> str:
        return "\n".join(self.err)

    def describe(self, lines: int = 30) -> str:
        return (f"{self.name} pid {self.pid} rc {self.popen.poll()}\n  cmd: {' '.join(self.cmd)}\n"
                + "\n".join("  | " + ln for ln in self.err[-lines:]))

    def next_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next READY line's JSON; fails if the process exits or stays silent."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready.get(timeout=0.02)
            except queue.Empty:
                pass
            if self.popen.poll() is not None and self.ready.empty():
                self._join_readers()
                if self.ready.empty():
                    pytest.fail(f"{self.name} exited before READY\n{self.describe()}")
            if time.monotonic() >= deadline:
                pytest.fail(f"no READY from {self.name} within {timeout:g} s\n{self.describe()}")

    def ready_nowait(self) -> dict[str, Any] | None:
        try:
            return self.ready.get_nowait()
        except queue.Empty:
            return None

    def wait(self, timeout: float) -> int:
        """Wait for the exit code; fails the test if the process is still running after ``timeout``."""
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout:g} s\n{self.describe()}")
        self._join_readers()
        return rc

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stdout line that is a JSON object (a producer's results)."""
        return [json.loads(ln) for ln in self.out if ln.startswith("{")]

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        """A producer's JSON result (its last JSON line); fails if it exited non-zero."""
        rc = self.wait(timeout)
        found = self.json_lines()
        if rc != 0 or not found:
            pytest.fail(f"{self.name} exited with {rc} and {len(found)} results\n{self.describe()}")
        return found[-1]

    def _join_readers(self) -> None:
        for t in self._readers:
            t.join(timeout=5)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def close(self) -> None:
        self._join_readers()
        for s in (self.popen.stdout, self.popen.stderr):
            if s is not None:
                s.close()


class Procs:
    """Starts recorder, supervisor and producer processes and owns their cleanup."""

    def __init__(self) -> None:
        self.started: list[Proc] = []
        self.roots: set[str] = set()

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        p = Proc(name, [sys.executable, *args], clean_env(env), cwd)
        self.started.append(p)
        return p

    def supervisor(self, root: Path, env: dict[str, str] | None = None, ready: bool = True,
                   extra: list[str] | None = None, cwd: Path | None = None) -> Proc:
        """``recorder run --data-root root [extra]``; waits for the first READY unless ``ready=False``."""
        self.roots.add(str(root))
        p = self.spawn("supervisor", ["-m", "recorder", "run", "--data-root", str(root), *(extra or [])], env, cwd)
        if ready:
            p.first_ready = p.next_ready()
        return p

    def recorder(self, root: Path, env: dict[str, str] | None = None, ready: bool = True) -> Proc:
        """A bare, unsupervised recorder (``python -m recorder.router``)."""
        self.roots.add(str(root))
        p = self.spawn("recorder", ["-m", "recorder.router", "--data-root", str(root)], env)
        if ready:
            p.first_ready = p.next_ready()
        return p

    def producer(self, root: Path, count: int, *, user: str = "user01", session: str = "sess01",
                 rate: float = 0.0, audit_every: int = 0, flush_timeout: float = 60.0,
                 fork: bool = False, env: dict[str, str] | None = None) -> Proc:
        """A producer process sending ``count`` records (see _producer.py); prints JSON results."""
        args = [str(PRODUCER), "--data-root", str(root), "--count", str(count), "--user", user,
                "--session", session, "--rate", str(rate), "--audit-every", str(audit_every),
                "--flush-timeout", str(flush_timeout)]
        if fork:
            args.append("--fork")
        return self.spawn(f"producer-{user}", args, env)

    def cleanup(self) -> None:
        live = [p for p in reversed(self.started) if p.popen.poll() is None]
        for p in live:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE
        for p in live:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.started:
            # The whole group: a supervised recorder dies with its supervisor
            # (PDEATHSIG), but a test must never leave one behind regardless.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if p.popen.poll() is None:
                p.popen.wait(timeout=5)
            p.close()
        cfg = load_config(None)
        for root in self.roots:
            try:
                shutil.rmtree(endpoints(cfg, root).run_dir, ignore_errors=True)
            except RecorderError:
                pass


# -- what is on disk -------------------------------------------------------------
def on_disk(root: Path) -> list[dict[str, Any]]:
    """Every stored envelope under ``root``, in the recorder's insertion order."""
    return list(read(root))


def by_producer(root: Path, per_type: bool = False) -> dict[Any, list[int]]:
    """Producer sequences on disk, in read order (each producer's by ``pseq``, see recorder.reading._order).

    Keyed by producer id, or by (producer id, schema type) with ``per_type``.
    """
    out: dict[Any, list[int]] = {}
    for e in on_disk(root):
        key = (e["producer"], e["schema_type"]) if per_type else e["producer"]
        out.setdefault(key, []).append(e["pseq"])
    return out


def check_exactly_once(root: Path, results: list[dict[str, Any]], per_type: bool = False) -> dict[str, list[int]]:
    """Every acknowledged, non-rejected record of each producer is on disk once, in order.

    ``results`` hold ``producer``, ``acked`` (the durable watermark) and
    ``rejected`` (producer sequences refused). Records above the watermark
    may be on disk (durable, acknowledgement lost) but never twice. Order is
    checked over all of a producer's records in the recorder's insertion
    order, or with ``per_type`` only within each schema type (each type's
    writer appends in its own order; see test_service_crash for across types).

    Returns:
        producer id -> its producer sequences on disk, in insertion order.
    """
    disk = by_producer(root)
    for key, seqs in by_producer(root, per_type).items():
        out_of_order = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
        assert not out_of_order, f"{key}: out of order (pseq, next pseq): {out_of_order[:20]}"
    for r in results:
        seqs = disk.get(r["producer"], [])
        dups = sorted(s for s, n in Counter(seqs).items() if n > 1)
        assert not dups, f"producer {r['producer']}: on disk more than once: {dups[:20]}"
        refused = set(r.get("rejected", []))
        present = set(seqs)
        missing = [s for s in range(1, r["acked"] + 1) if s not in refused and s not in present]
        assert not missing, (f"producer {r['producer']}: {len(missing)} acknowledged records missing, "
                             f"e.g. {missing[:20]} (acked {r['acked']})")
        wrongly = sorted(present & refused)
        assert not wrongly, f"producer {r['producer']}: rejected records on disk: {wrongly[:20]}"
    return disk


def assert_verified(root: Path) -> None:
    """``recorder verify`` finds every journal (internal logs included) clean."""
    files, problems = verify([root])
    assert files > 0
    assert problems == [], "\n".join(map(str, problems))


def assert_verify_cli(root: Path) -> None:
    """The ``recorder verify`` command exits 0 over ``root``."""
    r = subprocess.run([sys.executable, "-m", "recorder", "verify", "-q", str(root)],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode == 0, f"recorder verify exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert " 0 with problems" in r.stdout, r.stdout


def temp_files(root: Path) -> list[str]:
    """Files left behind by an interrupted atomic write (``.<name>.tmp-<pid>``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name)


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """Whole JSON lines of one journal, header included."""
    with open(path, "rb") as f:
        return [json.loads(ln) for ln in f if ln.endswith(b"\n")]


def batches(path: Path) -> list[list[int]]:
    """The commit batches of one journal as lists of producer sequences (header excluded).

    The last line of every appended batch carries ``"commit": true``.
    """
    out: list[list[int]] = []
    cur: list[int] = []
    for obj in journal_lines(path)[1:]:
        cur.append(obj["pseq"])
        if obj.get("commit") is True:
            out.append(cur)
            cur = []
    assert not cur, f"{path}: lines after the last commit mark: {cur}"
    return out


def audit_events(root: Path) -> list[str]:
    """The recorder's own audit events, in order."""
    return [o["event_type"] for o in journal_lines(root / "_recorder" / "audit.jsonl")[1:]]


def stats(root: Path, timeout: float = 5.0) -> dict[str, Any]:
    """``recorder stats --json`` over the control channel."""
    r = subprocess.run([sys.executable, "-m", "recorder", "stats", "--json", "--data-root", str(root),
                        "--timeout", str(timeout)],
                       capture_output=True, text=True, timeout=timeout + 30, env=clean_env())
    assert r.returncode == 0, f"recorder stats exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def message_file(root: Path, user: str = "user01", session: str = "sess01",
                 schema_type: str = "a3cp_message") -> Path:
    """The journal the shipped registry's template names for one user, session and type."""
    return root / "logs" / "users" / user / "sessions" / session / f"{schema_type}.jsonl"
