"""strace for the syscalls benchmark: the recorder's threads by role, attaching, injecting, parsing the logs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ._common import wait_or_kill

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
#: Python threads of the recorder in creation order (ZeroMQ's own threads left out):
#: Store starts the sealer, Router.bind starts one writer actor per type in config order
ROLES = ("main", "sealer", "writer:a3cp_message", "writer:raw_action")


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
            wait_or_kill(self.popen, 10)
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
