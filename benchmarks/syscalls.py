"""Crash at every syscall: kill (or fail) the recorder at the Nth data-root syscall of one thread, then check.

``python -m benchmarks syscalls`` writes a config into a temporary directory
(``a3cp_message`` JSONL segments of 5 records, ``raw_action`` Parquet
segments of 3, ``min_free_bytes = 0``) and runs a small workload against
``python -m recorder.router``: 12 ``a3cp_message`` and 7 ``raw_action``
records, each sent alone and waited for, so it opens, rotates, seals,
converts to Parquet and deletes journals.

**Reference run.** Once READY, the recorder's threads are traced
(``strace -f -ff -y -p PID``) while the workload runs; every ``write``,
``fdatasync``, ``fsync``, ``rename*``, ``openat``, ``unlink*`` and
``ftruncate`` whose file or directory lies under the data root is counted per
thread role (sealer, ``writer:<type>``, main) and its paths are kept.

**Fault cases.** For a fault (role, syscall group, N, action) a fresh data
root gets a fresh recorder; once READY, ``strace -p TID`` attaches to the
thread of that role only, with ``-e inject=SYSCALLS:signal=KILL:when=N``
(or ``error=EIO``/``error=ENOSPC``, ``when=N`` once or ``when=N+`` from N
on) and one ``-P`` per path the reference run saw under the data root.
Three facts of strace shape this:

- ``-P`` matches a path exactly, not a directory prefix, so ``-P <root>``
  alone would only match syscalls on the root directory itself: every
  directory and file the reference run touched is listed (temp names carry
  the recorder's pid, replaced by the new one);
- ``when=N`` counts per traced thread, so attaching to all threads would
  kill at whichever thread reaches its Nth call first; attaching to one
  thread makes N exact, and the sweep goes over every thread role;
- ``-e trace=none`` turns injection off (strace 6.1), so the injected
  syscalls are traced into a log, which also says where the fault landed.

Counting starts after READY (strace attaches then). ``signal=KILL`` kills
on syscall entry, so the Nth call never runs. ``ftruncate`` runs after
READY only when a batch is cut back, so its cases inject ``EIO`` into the
Nth ``fdatasync`` and kill at the cut-back's ``ftruncate``.

After the fault: every ``*.parquet`` under a final name must be readable
by pyarrow (checked before anything restarts). If the recorder still runs,
strace detaches (the fault clears) and two more records must be stored,
not refused. Then a new recorder starts without strace, the client resends
what was not acknowledged (``flush``), records refused during the fault are
sent again as new records, two more records go in, and the recorder stops
with SIGTERM. The checks: every record acknowledged as durable is on disk
exactly once and each producer's records are in order within each type; no
refused record is on disk; every logical record (``record_id``) is on disk
exactly once in the end; ``recorder.verify`` is clean; no temp file is left;
every Parquet file is readable; the audit log has exactly one
``segment_sealed`` event per segment with a manifest or catalog entry (with
the manifest's record count) and none for any other (``recorder._trail``);
no segment holds more than its type's ``rotate_records``. When the fault hit a record batch itself
(``write``/``fdatasync`` of a data journal by its writer), the record in
flight must not have been acknowledged as durable.

    python -m benchmarks syscalls                       # the full sweep (every N): ~750 cases, 15-20 min
    python -m benchmarks syscalls --quick --seed S      # one sampled N per syscall group and error kind
    python -m benchmarks syscalls --actions kill --groups fdatasync rename

``--quick --seed S`` draws the same cases as tests/integration/test_syscall_crash.py
run with ``RECORDER_TEST_SEED=S``. A case whose N lies past what its thread
did in that run (the counts vary a little with timing) reports "not reached".

Results go to ``benchmarks/results/syscalls-<time>.json``; failing cases keep
their directory (data root, strace log, recorder stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from ._common import PACKAGE_DIR, default_data_parent, machine_info, progress, write_results

CASE = "syscalls"

#: syscall groups a fault targets; strace counts each syscall of a group on its own,
#: and the recorder (dir fds everywhere) issues only renameat and unlinkat of theirs
GROUPS: dict[str, tuple[str, ...]] = {
    "write": ("write",),
    "fdatasync": ("fdatasync",),
    "fsync": ("fsync",),
    "rename": ("rename", "renameat", "renameat2"),
    "openat": ("openat",),
    "unlink": ("unlink", "unlinkat"),
    "ftruncate": ("ftruncate",),
}
_GROUP_OF = {s: g for g, members in GROUPS.items() for s in members}
ACTIONS = ("kill", "EIO", "ENOSPC")
ERROR_GROUPS = ("write", "fdatasync")
#: Python threads of the recorder in creation order (ZeroMQ's own threads left out):
#: Store starts the sealer, Router.bind starts one writer actor per type in config order
ROLES = ("main", "sealer", "writer:a3cp_message", "writer:raw_action")

CONFIG = """\
# Written by benchmarks/syscalls.py: small segments, so a short workload rotates, seals and converts.
[recorder]
min_free_bytes = 0

[defaults]
durability = "fsync"
hash = "sha256"

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.jsonl"
rotate_records = 5

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.parquet"
max_record_bytes = 1048576
rotate_records = 3
"""
#: rotate_records of each type in CONFIG: no segment may hold more
LIMITS = {"a3cp_message": 5, "raw_action": 3}
USER, SESSION = "u1", "s1"
#: (schema type, sample index): 12 messages (2 sealed segments, 1 open) and 7 actions (2 Parquet files, 1 open)
WORKLOAD: list[tuple[str, int]] = [
    ("a3cp_message", 0), ("a3cp_message", 1), ("raw_action", 1001), ("a3cp_message", 2), ("a3cp_message", 3),
    ("raw_action", 1003), ("a3cp_message", 4), ("a3cp_message", 5), ("raw_action", 1005), ("a3cp_message", 6),
    ("a3cp_message", 7), ("raw_action", 1007), ("a3cp_message", 8), ("a3cp_message", 9), ("raw_action", 1009),
    ("a3cp_message", 10), ("raw_action", 1011), ("a3cp_message", 11), ("raw_action", 1013),
]
RESUMED = [("a3cp_message", 200), ("raw_action", 1200)]  # after strace detached, same recorder
AFTER_RESTART = [("a3cp_message", 300), ("raw_action", 1300)]
ACK_TIMEOUT = 15.0  # s a record may wait for its acknowledgement while the recorder runs
RESUME_TIMEOUT = 3.0  # likewise, once the fault cleared (an idle recorder acknowledges in ms)
SETTLE = 1.3  # s after the workload: the writers' housekeeping (1 s) drains finished seals
READY_TIMEOUT = 30.0


def record_for(stype: str, i: int) -> dict[str, Any]:
    """The record of the workload item (schema type, sample index)."""
    from recorder.testing import sample_message, sample_raw_action

    if stype == "raw_action":
        return sample_raw_action(USER, SESSION, i, frames=2)
    return sample_message(USER, SESSION, i)


# -- the recorder process ------------------------------------------------------------------------
class RecorderProc(Protocol):
    """What a case needs of a started recorder (``tests/integration``'s ``Proc`` has it too)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def wait(self, timeout: float) -> int: ...

    def signal(self, sig: int) -> None: ...

    def describe(self, lines: int = 30) -> str: ...


#: (data root, config) -> a started recorder and its READY JSON
Start = Callable[[Path, Path], "tuple[RecorderProc, dict[str, Any]]"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RECORDER_FAULT"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Child:
    """``python -m recorder.router``: READY lines parsed, stderr appended to a file."""

    def __init__(self, root: Path, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "ab")
        self.cmd = [sys.executable, "-m", "recorder.router", "--data-root", str(root), "--config", str(config)]
        self.popen = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self._log, text=True, env=_env(), cwd=PACKAGE_DIR.parent,
                                      start_new_session=True)
        self.pid = self.popen.pid
        self.ready: queue.Queue[dict[str, Any]] = queue.Queue()
        assert self.popen.stdout is not None
        self._pump = threading.Thread(target=self._read, args=(self.popen.stdout,), daemon=True)
        self._pump.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("READY "):
                self.ready.put(json.loads(line[6:]))

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def next_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready.get(timeout=0.02)
            except queue.Empty:
                pass
            if self.popen.poll() is not None and self.ready.empty():
                self._pump.join(timeout=2)
                if self.ready.empty():
                    raise RuntimeError(f"recorder exited before READY\n{self.describe()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no READY within {timeout:g} s\n{self.describe()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"recorder still running after {timeout:g} s\n{self.describe()}") from None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def describe(self, lines: int = 30) -> str:
        self._log.flush()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return (f"recorder pid {self.pid} rc {self.popen.poll()}\n  cmd: {' '.join(self.cmd)}\n"
                + "\n".join("  | " + ln for ln in tail))

    def close(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own session: the recorder and nothing else
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(timeout=10)
        self._pump.join(timeout=5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


class Launcher:
    """Starts recorders for the benchmark and kills whatever is left at ``close``."""

    def __init__(self) -> None:
        self.children: list[_Child] = []

    def start(self, root: Path, config: Path) -> tuple[RecorderProc, dict[str, Any]]:
        child = _Child(root, config, root.parent / "recorder.stderr")
        self.children.append(child)
        return child, child.next_ready(READY_TIMEOUT)

    def close(self) -> None:
        for c in self.children:
            c.close()
        self.children.clear()


# -- strace ---------------------------------------------------------------------------------------
def strace_problem() -> str | None:
    """Why the strace cases cannot run here, or None."""
    if shutil.which("strace") is None:
        return "strace is not installed (apt-get install -y strace)"
    return None


def python_threads(pid: int, want: int = len(ROLES), timeout: float = 5.0) -> list[int]:
    """The recorder's Python threads in creation order, ZeroMQ's ``ZMQbg/*`` threads left out.

    Thread ids grow from the process id, modulo ``pid_max`` (other processes
    make them wrap around often). A ZeroMQ thread names itself once it runs,
    so a moment after READY it may still be called ``python``: this waits (up
    to ``timeout``) for ``want``.
    """
    try:
        with open("/proc/sys/kernel/pid_max", encoding="utf-8") as f:
            pid_max = int(f.read())
    except (OSError, ValueError):
        pid_max = 1 << 22
    deadline = time.monotonic() + timeout
    while True:
        out = []
        for t in sorted((int(t) for t in os.listdir(f"/proc/{pid}/task")), key=lambda t: (t - pid) % pid_max):
            try:
                with open(f"/proc/{pid}/task/{t}/comm", encoding="utf-8") as f:
                    if f.read().startswith("ZMQbg"):
                        continue
            except FileNotFoundError:
                continue
            out.append(t)
        if len(out) == want or time.monotonic() > deadline:
            if len(out) != want:
                raise RuntimeError(f"expected {want} Python threads at READY ({', '.join(ROLES)}), found {out}")
            return out
        time.sleep(0.01)


def _tracer(pid: int, tid: int) -> int:
    try:
        with open(f"/proc/{pid}/task/{tid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Strace:
    """One strace process attached to threads of the recorder; stopped (detached) by ``stop``."""

    def __init__(self, args: list[str], pid: int, tids: list[int], log: Path) -> None:
        self.err_path = log.with_suffix(".stderr")
        self._err = open(self.err_path, "wb")
        self.cmd = ["strace", "-qq", "-ttt", "-y", *args]
        self.popen = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=self._err)
        deadline = time.monotonic() + 10
        while not all(_tracer(pid, t) for t in tids):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                err = self.err_path.read_text(encoding="utf-8", errors="replace").strip()
                raise RuntimeError(f"strace could not attach to {tids} of pid {pid} (rc {self.popen.returncode}): "
                                   f"{err or 'timeout'}\n  cmd: {' '.join(self.cmd[:12])} ...")
            time.sleep(0.005)

    def stop(self) -> int | None:
        """Detach (SIGINT; strace lets the tracee run on) and wait; returns strace's exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._err.close()
        return self.popen.returncode


_LINE = re.compile(r"^(\d+\.\d+) (\w+)\((.*)$")
_FD_PATH = re.compile(r"<(/[^>]*)>")
_SIGNAL_RET = re.compile(r"\) += \?\s*$")


@dataclass
class Call:
    """One syscall on the data root, as strace logged it."""

    t: float
    syscall: str
    paths: list[str]  # relative to the data root ('' is the root itself)
    result: str

    @property
    def group(self) -> str:
        return _GROUP_OF.get(self.syscall, self.syscall)


def parse_log(text: str, root: str) -> list[Call]:
    """The calls of one thread's strace log (``-ttt -y``) that touch a path under ``root``."""
    calls = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        rel = []
        for p in _FD_PATH.findall(line):
            if p == root or p.startswith(root + "/"):
                rel.append(p[len(root) + 1:])
        if not rel:
            continue
        result = line.rsplit(") = ", 1)[1] if ") = " in line else ("?" if _SIGNAL_RET.search(line) else "")
        calls.append(Call(float(m[1]), m[2], rel, result.strip()))
    return calls


# -- the reference run ---------------------------------------------------------------------------
@dataclass
class Reference:
    """What the workload does after READY, per thread role."""

    counts: dict[str, dict[str, int]]  # role -> group -> calls on the data root
    targets: dict[str, dict[str, list[str]]]  # role -> group -> path of each call (1st, 2nd, ...)
    paths: list[str]  # every path under the data root, relative, temp names with "{pid}"
    seconds: float

    def total(self, groups: Iterable[str] = tuple(GROUPS)) -> int:
        return sum(n for by in self.counts.values() for g, n in by.items() if g in groups)


def _pid_free(rel: str, pid: int) -> str:
    return rel.replace(f".tmp-{pid}", ".tmp-{pid}")


def write_config(work: Path) -> Path:
    config = work / "syscalls.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def reference(start: Start, work: Path) -> Reference:
    """Run the workload once with every thread traced; count data-root syscalls per role."""
    from recorder.client import Client

    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work)
    root = work / "data"
    t0 = time.monotonic()
    rec, ready = start(root, config)
    pid = ready["pid"]
    real = os.path.realpath(root)
    threads = python_threads(pid)
    role_of = dict(zip(threads, ROLES))
    prefix = work / "trace"
    traced = ",".join(s for g in GROUPS.values() for s in g)
    st = Strace(["-f", "-ff", "-p", str(pid), "-e", f"trace={traced}", "-o", str(prefix)], pid, threads,
                prefix)
    client = Client(data_root=str(root), config=str(config), user_id=USER, session_id=SESSION, timeout=30)
    try:
        history = History()
        if drive(client, WORKLOAD, rec, history) != "done":
            raise RuntimeError(f"the reference run's recorder exited\n{rec.describe()}")
        settle(root, rec, lambda: False, SETTLE)
    finally:
        st.stop()
        _close_client(client)
    rec.signal(signal.SIGTERM)
    rec.wait(30)
    counts: dict[str, dict[str, int]] = {r: dict.fromkeys(GROUPS, 0) for r in ROLES}
    targets: dict[str, dict[str, list[str]]] = {r: {g: [] for g in GROUPS} for r in ROLES}
    paths: set[str] = set()
    for log in work.glob("trace.*"):
        if log.suffix == ".stderr":
            continue
        role = role_of.get(int(log.suffix[1:]), "other")
        for call in parse_log(log.read_text(encoding="utf-8", errors="replace"), real):
            paths.update(_pid_free(p, pid) for p in call.paths)
            if role in counts and call.group in GROUPS:
                counts[role][call.group] += 1
                targets[role][call.group].append(call.paths[0])
    for role in ROLES[2:]:  # the roles by creation order must match what the threads did
        stype = role.split(":", 1)[1]
        if counts[role]["write"] and not any(f"/{stype}_" in p for p in targets[role]["write"]):
            raise RuntimeError(f"thread {role} wrote no {stype} file: thread roles are not as expected "
                               f"({targets[role]['write'][:5]})")
    return Reference(counts, targets, sorted(paths), time.monotonic() - t0)


# -- one fault case ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """Where and how strace hits the recorder: the ``n``-th call of ``group`` by thread ``role``."""

    role: str
    group: str
    n: int
    action: str = "kill"  # kill (SIGKILL on entry), EIO or ENOSPC (the call fails, not run)
    repeat: bool = False  # errors: every call from the n-th on (when=N+), else the n-th only
    then_kill: str | None = None  # also SIGKILL at the first call of this group after attaching

    @property
    def kind(self) -> str:
        """kill (a kill at a syscall, the cut-back ones included), EIO or ENOSPC."""
        return "kill" if self.action == "kill" or self.then_kill else self.action

    @property
    def name(self) -> str:
        what = "kill" if self.action == "kill" else f"{self.action}{'+' if self.repeat else ''}"
        tail = f"+kill@{self.then_kill}" if self.then_kill else ""
        return f"{what}@{self.group}#{self.n}:{self.role}{tail}"

    def strace_args(self) -> list[str]:
        syscalls = list(GROUPS[self.group])
        what = "signal=KILL" if self.action == "kill" else f"error={self.action}"
        args = ["-e", f"inject={','.join(syscalls)}:{what}:when={self.n}{'+' if self.repeat else ''}"]
        if self.then_kill:
            syscalls += GROUPS[self.then_kill]
            args += ["-e", f"inject={','.join(GROUPS[self.then_kill])}:signal=KILL:when=1"]
        return ["-e", f"trace={','.join(syscalls)}", *args]


@dataclass
class Sent:
    """One record the client sent: producer sequence, workload item, send time, final state."""

    pseq: int
    stype: str
    i: int
    t: float  # time.time() just before record()
    state: str = "unknown"  # acked (durable), rejected, unknown


@dataclass
class History:
    sent: list[Sent] = field(default_factory=list)

    def by_pseq(self) -> dict[int, Sent]:
        return {s.pseq: s for s in self.sent}

    def mark_acked(self, watermark: int, rejected: Iterable[int] = ()) -> None:
        refused = set(rejected)
        for s in self.sent:
            if s.pseq in refused:
                s.state = "rejected"
            elif s.pseq <= watermark and s.state == "unknown":
                s.state = "acked"


def _collect(client: Any, history: History) -> None:
    """Mark what the client knows: its watermark and (via flush) the refusals up to it."""
    from recorder.exceptions import RecorderError, RejectedError

    rejected: list[int] = []
    watermark = client.acked
    if history.sent and watermark >= history.sent[-1].pseq:
        try:
            client.flush(timeout=0.5)
        except RejectedError as e:
            rejected = [r[0] for r in e.rejections]
        except RecorderError:
            pass
    history.mark_acked(watermark, rejected)


def drive(client: Any, items: list[tuple[str, int]], rec: RecorderProc, history: History,
          timeout: float = ACK_TIMEOUT) -> str:
    """Send items one at a time, each waited for; 'done', or 'exited' when the recorder died meanwhile."""
    for stype, i in items:
        if rec.returncode is not None:
            return "exited"
        t = time.time()
        pseq = client.record(record_for(stype, i), schema_type=stype)
        history.sent.append(Sent(pseq, stype, i, t))
        deadline = time.monotonic() + timeout
        while client.acked < pseq:
            if rec.returncode is not None:
                _collect(client, history)
                return "exited"
            if time.monotonic() > deadline:
                raise RuntimeError(f"record #{pseq} not acknowledged within {timeout:g} s while the recorder "
                                   f"ran\n{rec.describe()}")
            time.sleep(0.002)
        _collect(client, history)
    return "done"


def _active_sealing(root: Path) -> list[str]:
    state = root / "_recorder" / "state"
    out = []
    for p in state.glob("active-*.json"):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            out += [k for k, v in doc.items() if v == "sealing"]
    return out


def settle(root: Path, rec: RecorderProc, fired: Callable[[], bool], seconds: float) -> None:
    """Give the recorder time to seal (up to 3 s) and then ``seconds`` more, until the fault fires."""
    seal_by = time.monotonic() + 3
    end = time.monotonic() + seconds
    while rec.returncode is None and not fired():
        now = time.monotonic()
        if now >= end and (now >= seal_by or not _active_sealing(root)):
            return
        time.sleep(0.01)


def unreadable_parquet(root: Path) -> list[str]:
    """Parquet files under a final name (not a hidden temp file) that pyarrow cannot read."""
    import pyarrow.parquet as pq

    bad = []
    for p in sorted(root.rglob("*.parquet")):
        if p.name.startswith("."):
            continue
        try:
            pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            bad.append(f"{p.relative_to(root)}: {type(e).__name__}: {e}")
    return bad


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name)


def lasting_temp_files(root: Path, rec: RecorderProc, within: float = 2.0) -> list[str]:
    """Temp files left behind: while the recorder runs, one of an atomic write still under way (the
    sealer's manifest, say, when the fault fired mid-seal) is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = temp_files(root)
        if not found or rec.returncode is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def _close_client(client: Any) -> None:
    from recorder.exceptions import RecorderError

    try:
        client.close(timeout=0.2)
    except RecorderError:
        pass


def _is_batch_call(fault: Fault, call: Call) -> bool:
    """Did the fault hit a record batch itself: write/fdatasync of a data journal by its writer?"""
    rel = call.paths[0]
    return (fault.role.startswith("writer:") and call.group in ERROR_GROUPS
            and not rel.startswith("_recorder/") and rel.endswith(".jsonl")
            and f"/{fault.role.split(':', 1)[1]}_" in "/" + rel)


def check(root: Path, history: History, producer: str) -> list[str]:
    """The invariants over the final data root (``violations``; empty when all is well)."""
    from recorder import read, verify
    from recorder._trail import check_trail, segment_sizes

    out: list[str] = []
    disk = list(read(root))
    mine = [e for e in disk if e.get("producer") == producer]
    copies = Counter(e["pseq"] for e in mine)
    for s in history.sent:
        n = copies.get(s.pseq, 0)
        if s.state == "acked" and n != 1:
            out.append(f"record #{s.pseq} ({s.stype} {s.i}) acknowledged as durable, on disk {n} times")
        elif s.state == "rejected" and n:
            out.append(f"record #{s.pseq} ({s.stype} {s.i}) refused, yet on disk {n} times")
        elif s.state == "unknown":
            out.append(f"record #{s.pseq} ({s.stype} {s.i}) never acknowledged nor refused")
    for stype in {s.stype for s in history.sent}:
        seqs = [e["pseq"] for e in sorted((e for e in mine if e["schema_type"] == stype), key=lambda e: e["seq"])]
        bad = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
        if bad:
            out.append(f"{stype}: producer order broken (pseq, next): {bad[:10]}")
    want = {(s.stype, record_for(s.stype, s.i)["record_id"]) for s in history.sent}
    ids = Counter((e["schema_type"], e.get("record_id")) for e in mine)
    for key in sorted(want):
        if ids.get(key, 0) != 1:
            out.append(f"logical record {key} on disk {ids.get(key, 0)} times (want 1)")
    files, problems = verify([root])
    out += [f"verify: {p}" for p in problems]
    if files == 0:
        out.append("verify found no journal")
    out += [f"temp file left: {t}" for t in temp_files(root)]
    out += [f"unreadable Parquet file: {b}" for b in unreadable_parquet(root)]
    # the audit log tells every segment's sealing once, as the manifests and the catalog do
    out += [f"audit trail: {p}" for p in check_trail(root).problems]
    out += [f"segment over rotate_records = {LIMITS[t]}: {p} holds {n} records"
            for t, segs in segment_sizes(root).items() for p, n, _ in segs if n > LIMITS.get(t, n)]
    return out


def run_case(fault: Fault, ref: Reference, work: Path, start: Start,
             workload: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """Run one fault case in ``work`` (a fresh directory); returns its result (``violations`` empty if OK).

    ``workload`` replaces WORKLOAD (the reference's counts and paths must still fit it).
    """
    from recorder.client import Client
    from recorder.exceptions import RecorderError, RejectedError

    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work)
    root = work / "data"
    result: dict[str, Any] = {"fault": fault.name, **asdict(fault), "violations": []}
    violations: list[str] = result["violations"]
    history = History()
    rec, ready = start(root, config)
    pid = ready["pid"]
    real = os.path.realpath(root)
    threads = python_threads(pid)
    tid = threads[ROLES.index(fault.role)]
    result["threads"] = threads
    watch = [f"-P{real}"] + [f"-P{real}/{p.replace('{pid}', str(pid))}" for p in ref.paths if p]
    log = work / "strace.log"
    st = Strace(["-p", str(tid), "-o", str(log), *fault.strace_args(), *watch], pid, [tid], log)
    client = Client(data_root=str(root), config=str(config), user_id=USER, session_id=SESSION, timeout=30)
    try:
        def fired() -> bool:
            if fault.then_kill:  # the kill is what counts, and it follows the error
                return False
            try:
                return "INJECTED" in log.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                return False

        try:
            result["workload"] = drive(client, WORKLOAD if workload is None else workload, rec, history)
            settle(root, rec, fired, SETTLE)
        except RuntimeError as e:
            violations.append(str(e).splitlines()[0])
        _collect(client, history)
        result["exit"] = rec.returncode
        result["temps_after_fault"] = lasting_temp_files(root, rec)  # a kill may leave some; a failed write should not
        # Nothing has restarted yet: a Parquet file under its final name must already be whole.
        violations += [f"after the fault: unreadable Parquet file: {b}" for b in unreadable_parquet(root)]
        st.stop()  # detached: the fault is gone from here on
        calls = parse_log(log.read_text(encoding="utf-8", errors="replace"), real)
        hit = [c for c in calls if "INJECTED" in c.result or c.result == "?"]
        killed = rec.returncode == -signal.SIGKILL
        result["fired"] = killed if fault.then_kill else bool(hit) and (fault.action != "kill" or killed)
        result["hit"] = [f"{c.syscall} {' -> '.join(c.paths)} = {c.result}" for c in hit[:3]]
        result["hits"] = len(hit)
        if fault.action == "kill":
            if rec.returncode is not None and rec.returncode != -signal.SIGKILL:
                violations.append(f"recorder exited with {rec.returncode}, not by the injected SIGKILL\n"
                                  f"{rec.describe()}")
        first = next((c for c in hit if "INJECTED" in c.result), None)
        if first is not None and fault.action != "kill" and _is_batch_call(fault, first):
            inflight = [s for s in history.sent if s.t <= first.t]
            if inflight:
                s = inflight[-1]
                result["failed_batch"] = {"pseq": s.pseq, "state": s.state}
                if s.state == "acked":
                    violations.append(f"record #{s.pseq}: its batch's {first.syscall} failed "
                                      f"({first.result}), yet it was acknowledged as durable")
        result["rejected_during_fault"] = sum(s.state == "rejected" for s in history.sent)

        if rec.returncode is None:
            # strace is gone, so is the fault: the same recorder must store new records again.
            try:
                before = len(history.sent)
                drive(client, RESUMED, rec, history, RESUME_TIMEOUT)
                resumed = history.sent[before:]
                if any(s.state != "acked" for s in resumed):
                    violations.append(f"writing did not resume once the fault cleared: "
                                      f"{[(s.pseq, s.state) for s in resumed]}")
            except RuntimeError as e:
                violations.append(str(e).splitlines()[0])
            rec.signal(signal.SIGTERM)
            rc = rec.wait(60)
            result["stop_exit"] = rc
            if rc != 0 and fault.action == "ENOSPC":
                violations.append(f"recorder stopped with {rc} after refusing records for ENOSPC\n{rec.describe()}")
        # Restart without strace: the client resends what was not acknowledged.
        rec2, _ = start(root, config)
        result["restart_exit"] = None
        try:
            try:
                client.flush(timeout=30)
            except RejectedError as e:
                history.mark_acked(client.acked, [r[0] for r in e.rejections])
            except RecorderError as e:
                violations.append(f"after the restart: {e}")
            history.mark_acked(client.acked)
            # Records refused during the fault go again, as new records; then some more.
            again = [(s.stype, s.i) for s in history.sent if s.state == "rejected"]
            before = len(history.sent)
            drive(client, again + AFTER_RESTART, rec2, history)
            late = [s for s in history.sent[before:] if s.state != "acked"]
            if late:
                violations.append(f"after the restart, records not stored: {[(s.pseq, s.state) for s in late]}")
        except RuntimeError as e:
            violations.append(str(e).splitlines()[0])
        finally:
            rec2.signal(signal.SIGTERM)
            result["restart_exit"] = rc2 = rec2.wait(60)
        if rc2 != 0:
            violations.append(f"the restarted recorder stopped with {rc2}\n{rec2.describe()}")
        result["resent"] = client.counters["resent"]
        result["producer"], result["acked"] = client.producer, client.acked
        result["rejected_pseqs"] = [x.pseq for x in history.sent if x.state == "rejected"]
        violations += check(root, history, client.producer)
        result["records"] = dict(Counter(s.state for s in history.sent))
    finally:
        st.stop()
        _close_client(client)
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


# -- the plan --------------------------------------------------------------------------------------
def full_plan(ref: Reference) -> list[Fault]:
    """Every N of every (role, group): kills at each syscall, errors at each write and fdatasync."""
    out: list[Fault] = []
    for g in GROUPS:
        for role in ROLES:
            if g == "ftruncate":  # cut-backs: kill at the ftruncate after the Nth fdatasync failed
                out += [Fault(role, "fdatasync", n, "EIO", then_kill="ftruncate")
                        for n in range(1, ref.counts[role]["fdatasync"] + 1)]
            else:
                out += [Fault(role, g, n) for n in range(1, ref.counts[role][g] + 1)]
    for action in ("EIO", "ENOSPC"):
        for repeat in (False, True):
            for g in ERROR_GROUPS:
                out += [Fault(role, g, n, action, repeat) for role in ROLES for n in range(1, ref.counts[role][g] + 1)]
    return out


#: error kinds: (action, from N on?, group)
ERROR_KINDS: list[tuple[str, bool, str]] = [(a, r, g) for a in ("EIO", "ENOSPC") for r in (False, True)
                                            for g in ERROR_GROUPS]


def sample_kill(ref: Reference, group: str, rng: random.Random) -> Fault | None:
    """A random kill at ``group``: any role's Nth call; for ftruncate, a cut-back after a batch's fdatasync failed."""
    if group == "ftruncate":
        pool = [(r, n) for r in ROLES if r.startswith("writer:")
                for n in _batch_calls(ref, r, "fdatasync", headers=False)]
        if not pool:
            return None
        role, n = rng.choice(pool)
        return Fault(role, "fdatasync", n, "EIO", then_kill="ftruncate")
    pool = [(r, n) for r in ROLES for n in range(1, ref.counts[r][group] + 1)]
    if not pool:
        return None
    role, n = rng.choice(pool)
    return Fault(role, group, n)


def sample_error(ref: Reference, action: str, repeat: bool, group: str, rng: random.Random) -> Fault | None:
    """A random error at a writer's own batch call (so the case checks that a failed batch is never acknowledged).

    A write is drawn from the writer's first segment only: once a seal has
    run, the writer saves the state file (more writes) when it notices the
    sealer finished, which depends on timing, so later ordinals move between
    runs. fdatasync ordinals do not move (the state file is fsync'd). The
    full sweep tries every N and says what each case hit.
    """
    pool = [(r, n) for r in ROLES if r.startswith("writer:")
            for n in _batch_calls(ref, r, group, first_segment=group == "write")]
    if not pool:
        return None
    role, n = rng.choice(pool)
    return Fault(role, group, n, action, repeat)


def sample_plan(ref: Reference, seed: int, per_kind: int = 1) -> list[Fault]:
    """``per_kind`` random faults for each kill group and each error kind (ERROR_KINDS)."""
    out: list[Fault | None] = []
    for k in range(per_kind):
        for g in GROUPS:
            out.append(sample_kill(ref, g, random.Random(f"{seed}:{k}:kill:{g}")))
        for action, repeat, g in ERROR_KINDS:
            out.append(sample_error(ref, action, repeat, g, random.Random(f"{seed}:{k}:{action}:{repeat}:{g}")))
    return sorted({f for f in out if f is not None}, key=lambda f: f.name)


def _batch_calls(ref: Reference, role: str, group: str, headers: bool = True,
                 first_segment: bool = False) -> list[int]:
    """Ordinals (1-based) of the role's calls of ``group`` on its own data journals.

    ``headers=False`` leaves out each journal's first call (its header's);
    ``first_segment`` keeps only the calls on the first journal it wrote.
    """
    stype = role.split(":", 1)[1]
    out: list[int] = []
    seen: list[str] = []
    for n, p in enumerate(ref.targets[role][group], 1):
        if not (p.endswith(".jsonl") and not p.startswith("_recorder/") and f"/{stype}_" in "/" + p):
            continue
        if first_segment and seen and p != seen[0]:
            break
        if headers or p in seen:
            out.append(n)
        if p not in seen:
            seen.append(p)
    return out


# -- the command ----------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    """Add the ``syscalls`` subcommand."""
    p = subparsers.add_parser(CASE, help="kill or fail the recorder at every data-root syscall (strace); check",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one sampled N per syscall group and error kind")
    p.add_argument("--per-kind", type=int, default=1, help="with --quick: sampled N per kind (default 1)")
    p.add_argument("--seed", type=int, help="seed of --quick's sample (default: from the clock; reported)")
    p.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS))
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    p.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--limit", type=int, default=0, help="run only the first N cases of the plan")
    p.add_argument("--dir", help="parent of the temporary directory (default: benchmarks/results/tmp)")
    p.add_argument("--keep", action="store_true", help="keep every case's directory, not only failing ones")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/syscalls-<time>.json)")
    p.set_defaults(func=run)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Reference run, plan, every case; the results."""
    problem = strace_problem()
    if problem:
        raise SystemExit(problem)
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    parent = Path(args.dir) if args.dir else default_data_parent()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="syscalls-", dir=parent)).resolve()
    t0 = time.monotonic()
    launcher = Launcher()
    try:
        progress("reference run (every thread traced)")
        ref = reference(launcher.start, work / "reference")
        launcher.close()
        progress(f"reference: {ref.total()} data-root syscalls after READY: "
                 + "; ".join(f"{r} " + ", ".join(f"{g} {n}" for g, n in c.items() if n)
                             for r, c in ref.counts.items() if any(c.values())))
        plan = sample_plan(ref, seed, args.per_kind) if args.quick else full_plan(ref)
        plan = [f for f in plan if f.kind in args.actions and (f.then_kill or f.group) in args.groups
                and f.role in args.roles]
        if args.limit:
            plan = plan[: args.limit]
        progress(f"{len(plan)} fault cases, {args.jobs} at a time")
        results: list[dict[str, Any]] = []
        lock = threading.Lock()

        def one(k: int, fault: Fault) -> dict[str, Any]:
            case_dir = work / f"case-{k:04d}"
            own = Launcher()
            try:
                r = run_case(fault, ref, case_dir, own.start)
            except Exception as e:  # noqa: BLE001 - a case that breaks is a failed case, the sweep goes on
                r = {"fault": fault.name, **asdict(fault), "violations": [f"{type(e).__name__}: {e}"]}
            finally:
                own.close()
            r["dir"] = str(case_dir)
            if not r["violations"] and not args.keep:
                shutil.rmtree(case_dir, ignore_errors=True)
            with lock:
                results.append(r)
                mark = "ok" if not r["violations"] else "FAILED"
                progress(f"[{len(results)}/{len(plan)}] {fault.name}: {mark}"
                         f"{'' if r.get('fired', True) else ' (not reached)'} {r.get('hit', [''])[:1]}")
            return r

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda kf: one(*kf), enumerate(plan)))
    finally:
        launcher.close()
    results.sort(key=lambda r: r["fault"])
    failed = [r for r in results if r["violations"]]
    if not failed and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    by_kind: Counter[str] = Counter()
    for r in results:
        kind = "kill" if r["action"] == "kill" or r.get("then_kill") else r["action"]
        by_kind[kind + ("" if r.get("fired") else " (not reached)")] += 1
    return {
        "case": CASE, "machine": machine_info(work), "seed": seed, "quick": bool(args.quick),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "work_dir": str(work), "reference": asdict(ref),
        "cases": len(results), "fired": sum(bool(r.get("fired")) for r in results),
        "by_kind": dict(by_kind), "failed": len(failed),
        "violations": [f"{r['fault']}: {v}" for r in failed for v in r["violations"]],
        "results": results, "wall_s": round(time.monotonic() - t0, 1),
    }


def summary(r: dict[str, Any]) -> str:
    """The human-readable summary of one sweep."""
    lines = [
        f"command        {r['command']}  (seed {r['seed']})",
        f"reference      {sum(sum(c.values()) for c in r['reference']['counts'].values())} data-root syscalls "
        f"after READY",
        f"fault cases    {r['cases']} ({r['fired']} reached their syscall): "
        + ", ".join(f"{k} {n}" for k, n in sorted(r["by_kind"].items())),
        f"failed         {r['failed']}",
        f"wall time      {r['wall_s']:.0f} s",
    ]
    lines += [f"VIOLATION  {v.splitlines()[0]}" for v in r["violations"][:40]]
    lines.append("result         " + ("OK" if not r["failed"] else "FAILED"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m benchmarks syscalls``: 0 when every case passed."""
    result = sweep(args)
    path = write_results(CASE, result, args.out)
    print(summary(result))
    print(f"results: {path}")
    if result["failed"]:
        print(f"kept: {result['work_dir']} (failing cases' data roots, strace logs, recorder stderr)")
    return 1 if result["failed"] else 0
