"""Shared harness pieces: machine facts, child processes (start, handshake, teardown), samples, result files, tables."""

from __future__ import annotations

import bisect
import json
import math
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any, NamedTuple

PACKAGE_DIR = Path(__file__).resolve().parent
RESULTS_DIR = PACKAGE_DIR / "results"
LIBRARIES = ("recorder", "msgspec", "pydantic", "pydantic_core", "pyzmq", "pyarrow", "psutil")
HIST_LO_NS = 1_000  # histogram: 1 µs ...
HIST_PER_DECADE = 20  # ... 20 log-spaced bins per decade ...
HIST_DECADES = 8  # ... up to 100 s


def progress(message: str) -> None:
    """One progress line on stderr (stdout is kept for results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def default_data_parent() -> Path:
    """Where data roots go unless ``--dir`` says otherwise: beside the results, on the repo's filesystem."""
    path = RESULTS_DIR / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def filesystem_of(path: str | Path) -> dict[str, str]:
    """Device, mount point and type of the filesystem holding ``path`` (from /proc/mounts)."""
    real = os.path.realpath(path)
    best = {"device": "?", "mount": "/", "fstype": "?"}
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                dev, mnt, fstype, *_ = line.split()
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best["mount"]):
                    best = {"device": dev, "mount": mnt, "fstype": fstype}
    except OSError:
        pass
    return best


def _git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_DIR, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "recorder"], cwd=PACKAGE_DIR.parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(data_dir: str | Path | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, OS, Python, libraries, data filesystem."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "libraries": _versions(),
        "git": _git_commit(),
    }
    if data_dir is not None:
        info["data_dir"] = str(data_dir)
        info["data_fs"] = filesystem_of(data_dir)
    return info


def run_case(case: str, argv: Sequence[str], timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python -m benchmarks <case> --one ARGV`` in a fresh interpreter; return its JSON line.

    Raises:
        RuntimeError: the child failed or printed no JSON result line.
    """
    cmd = [sys.executable, "-m", "benchmarks", case, "--one", *argv]
    proc = subprocess.run(cmd, cwd=PACKAGE_DIR.parent, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"case failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def write_results(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` as JSON to ``out`` or ``benchmarks/results/<name>-<UTC time>.json``."""
    if out is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{name}-{stamp}.json"
    else:
        path = Path(out)  # its directory exists: main() checked before the run
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows``; ``columns`` are (key, heading) pairs."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---:" if k not in ("layer", "durability") else "---" for k, _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:#.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


# -- child processes: start, READY/WARM/GO handshakes, teardown ------------------
class Child(NamedTuple):
    """A started ``python ...`` child and its stdout lines (a queue; None at EOF)."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]


def spawn(args: Sequence[str], stdin: bool = False) -> Child:
    """Start ``python ARGS`` in the repository; its stdout is read line by line, its stderr passes through."""
    proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE if stdin else None,
                            stdout=subprocess.PIPE, text=True, cwd=PACKAGE_DIR.parent)
    return Child(proc, line_reader(proc.stdout))


def start_server(args: Sequence[str], who: str, timeout: float = 60.0) -> tuple[Child, dict[str, Any]]:
    """Start a server child and wait for its ``READY <json>`` line; (the child, that JSON). Stopped on failure."""
    child = spawn(args)
    try:
        ready: dict[str, Any] = json.loads(wait_line(child.lines, "READY ", timeout, who)[6:])
    except BaseException:
        stop_server(child)
        raise
    return child, ready


def start_producers(commands: Sequence[Sequence[str]], warm_timeout: float) -> list[Child]:
    """Start every producer, then wait until each has printed ``WARM``; all stopped on failure."""
    children: list[Child] = []
    try:
        for cmd in commands:
            children.append(spawn(cmd, stdin=True))
        for i, c in enumerate(children):
            wait_line(c.lines, "WARM", warm_timeout, f"producer {i}")
    except BaseException:
        stop_all(children, [])
        raise
    return children


def go(children: Sequence[Child]) -> None:
    """Start every warm producer at once (``GO`` on its stdin)."""
    for c in children:
        assert c.proc.stdin is not None
        c.proc.stdin.write("GO\n")
        c.proc.stdin.flush()


def json_lines(children: Sequence[Child], timeout: float) -> list[dict[str, Any]]:
    """The JSON result line of each child, in order."""
    return [json.loads(wait_line(c.lines, "{", timeout, f"producer {i}")) for i, c in enumerate(children)]


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Wait up to ``timeout`` for ``proc`` to exit, else SIGKILL and reap it; True when it exited by itself."""
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def stop_server(child: Child, timeout: float = 30.0) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit status."""
    if child.proc.poll() is None:
        child.proc.send_signal(signal.SIGTERM)
        wait_or_kill(child.proc, timeout)
    return child.proc.returncode


def stop_all(producers: Sequence[Child], servers: Sequence[Child | None]) -> None:
    """Teardown in every case: kill producers still running, stop the servers (SIGTERM first)."""
    for c in producers:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
    for s in servers:
        if s is not None:
            stop_server(s)


def line_reader(stream: IO[str] | None) -> queue.Queue[str | None]:
    """Lines of ``stream`` on a queue (None at EOF), read by a daemon thread."""
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert stream is not None
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def wait_line(q: queue.Queue[str | None], prefix: str, timeout: float, who: str) -> str:
    """The next line of ``q`` that starts with ``prefix`` (others are skipped).

    Raises:
        RuntimeError: none within ``timeout``, or the child exited first.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{who}: no {prefix.strip()!r} line within {timeout:g} s")
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"{who} exited before printing {prefix.strip()!r}")
        if line.startswith(prefix):
            return line


def child_env() -> dict[str, str]:
    """The environment of a recorder child: ours without RECORDER_FAULT, with unbuffered output."""
    env = {k: v for k, v in os.environ.items() if k != "RECORDER_FAULT"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ReadyChild:
    """``python ARGS`` in the repository: its ``READY <json>`` lines queued with their arrival time by a
    daemon thread, its stderr written to ``log`` (appended to with ``append``).

    ``new_session`` starts it in a session of its own, so that :meth:`kill_group` kills it and nothing else.
    """

    #: who the child is, in the message when it exits before READY
    who = "the child"

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str], append: bool = False,
                 new_session: bool = False) -> None:
        self.log_path = log
        self._log = open(log, "ab" if append else "wb")
        self.cmd = [sys.executable, *args]
        self.popen = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                      text=True, cwd=PACKAGE_DIR.parent, env=env, start_new_session=new_session)
        self.pid = self.popen.pid
        self.ready: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        assert self.popen.stdout is not None
        self._pump = threading.Thread(target=self._read, args=(self.popen.stdout,), daemon=True)
        self._pump.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("READY "):
                self.ready.put((time.monotonic(), json.loads(line[6:])))

    def next_ready(self, timeout: float) -> tuple[float, dict[str, Any]]:
        """(arrival time, READY JSON) of the next READY line.

        Raises:
            RuntimeError: the child exited or said nothing within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready.get(timeout=0.02)
            except queue.Empty:
                pass
            if self.popen.poll() is not None and self.ready.empty():
                self._pump.join(timeout=2)
                if self.ready.empty():
                    raise RuntimeError(self._exited_early())
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no READY within {timeout:g} s{self._see()}")

    def _see(self) -> str:
        """Where to look, appended to an error message."""
        return f"; see {self.log_path}"

    def _exited_early(self) -> str:
        return f"{self.who} exited with {self.popen.returncode}{self._see()}"

    def describe(self, lines: int = 30) -> str:
        """Pid, exit status, command and the last ``lines`` lines of its stderr."""
        self._log.flush()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return (f"recorder pid {self.pid} rc {self.popen.poll()}\n  cmd: {' '.join(self.cmd)}\n"
                + "\n".join("  | " + ln for ln in tail))

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit status (None when it had to be killed)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        rc = self.popen.returncode if wait_or_kill(self.popen, timeout) else None
        self._pump.join(timeout=5)
        self._log.close()
        return rc

    def kill_group(self) -> None:
        """SIGKILL its session (``new_session``: the child and nothing else), wait, close its pipe and log."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(timeout=10)
        self._pump.join(timeout=5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


def recorder_stats(control: str, timeout: float = 5.0) -> dict[str, Any]:
    """The recorder's counters over its control channel (as ``recorder stats --json``)."""
    import msgspec
    import zmq

    from recorder import protocol as P

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(control)
        sock.send(P.encode(P.StatsRequest()))
        if not sock.poll(int(timeout * 1000)):
            raise RuntimeError(f"no stats from {control} within {timeout} s")
        reply = P.decode_control(sock.recv())
    finally:
        sock.close()
        ctx.term()
    assert isinstance(reply, P.StatsReply)
    stats: dict[str, Any] = msgspec.json.decode(reply.body)
    return stats


# -- measurements -------------------------------------------------------------------
def cpu_s(t: Any) -> float:
    """User + system seconds of a psutil/os cpu_times()."""
    return float(t.user + t.system)


def machine_busy_s(t: Any) -> float:
    """Busy CPU seconds of the whole machine (all CPUs) from psutil.cpu_times()."""
    idle = t.idle + getattr(t, "iowait", 0.0)
    return float(sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))


def vm_hwm(pid: int) -> int:
    """Peak resident set size of ``pid`` in bytes (VmHWM), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def fsync_probe(parent: Path, seconds: float) -> dict[str, Any]:
    """What the disk gives right now: 1 KB append + fdatasync latency, one at a time."""
    fd, name = tempfile.mkstemp(prefix="fsync-probe-", dir=parent)
    samples: list[int] = []
    data = b"x" * 1023 + b"\n"
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            os.write(fd, data)
            os.fdatasync(fd)
            samples.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
        os.unlink(name)
    samples.sort()
    q = percentiles(samples, 1e3)
    return {"ops": len(samples), "ops_per_s": round(len(samples) / seconds, 1),
            **{f"{k}_us": v for k, v in q.items()}}


def percentiles(sorted_ns: Sequence[int], unit_ns: float) -> dict[str, float]:
    """Nearest-rank p50/p90/p99/p99.9, mean and max of sorted ``sorted_ns``, in ``unit_ns`` units."""
    n = len(sorted_ns)
    if not n:
        return {k: float("nan") for k in ("p50", "p90", "p99", "p99.9", "mean", "max")}

    def q(p: float) -> float:
        return round(sorted_ns[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] / unit_ns, 4)

    return {"p50": q(50), "p90": q(90), "p99": q(99), "p99.9": q(99.9),
            "mean": round(sum(sorted_ns) / n / unit_ns, 4), "max": round(sorted_ns[-1] / unit_ns, 4)}


def histogram(sorted_ns: Sequence[int]) -> dict[str, Any]:
    """Counts in log-spaced bins (bin k holds values up to lo * 10**((k+1)/per_decade)); the first
    bin also holds everything below ``lo``, the last everything above the top."""
    nbins = HIST_DECADES * HIST_PER_DECADE
    counts, below = [], 0
    for k in range(nbins):
        edge = HIST_LO_NS * 10 ** ((k + 1) / HIST_PER_DECADE)
        upto = len(sorted_ns) if k == nbins - 1 else bisect.bisect_right(sorted_ns, edge)
        counts.append(upto - below)
        below = upto
    while counts and counts[-1] == 0:
        counts.pop()
    return {"lo_us": HIST_LO_NS / 1e3, "per_decade": HIST_PER_DECADE, "counts": counts}


def cdf_points(hist: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Upper bin edges (µs) and the cumulative fraction at each, from a log histogram."""
    counts = hist["counts"]
    total = sum(counts) or 1
    xs, ys, cum = [], [], 0
    for k, n in enumerate(counts):
        if not cum and not n:
            continue  # empty bins below the fastest value
        cum += n
        xs.append(hist["lo_us"] * 10 ** ((k + 1) / hist["per_decade"]))
        ys.append(cum / total)
    return xs, ys


def load_samples(path: str) -> array[int]:
    """An ``array('q')`` written with ``tofile`` (nanosecond samples)."""
    a = array("q")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a
