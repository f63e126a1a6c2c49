"""Start the recorder process, restart it when it dies, stop it gracefully.

The restart policy is a pure class driven by the caller's clock, so its
rules (backoff, a limit within a window, reset after a stable run) are
tested without processes. The supervisor spawns the recorder with
``sys.executable -m recorder.router`` (a fresh interpreter, never a fork of
one that imported ZeroMQ) and holds the endpoint and data-root locks for as
long as it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from ._run import endpoints, lock_endpoints, take_lock
from .config import load_config

__all__ = ["RestartPolicy", "Supervisor"]

EXIT_CONFIG = 2  # the recorder refused its config or lock: restarting will not help


@dataclass
class RestartPolicy:
    """When to restart a crashed recorder, and when to give up.

    Delays grow from ``initial`` by ``factor`` up to ``max_delay``; more than
    ``max_restarts`` crashes within ``window`` seconds means give up; a run
    that lasted ``stable_after`` seconds resets both.
    """

    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0
    max_restarts: int = 10
    window: float = 60.0
    stable_after: float = 30.0
    delay: float = 0.0
    recent: list[float] = field(default_factory=list)

    def on_exit(self, now: float, uptime: float) -> float | None:
        """A crash at ``now`` after ``uptime`` seconds: the delay before restarting, or None."""
        if uptime >= self.stable_after:
            self.delay = 0.0
            self.recent.clear()
        self.recent = [t for t in self.recent if now - t < self.window]
        if len(self.recent) >= self.max_restarts:
            return None
        self.recent.append(now)
        self.delay = self.initial if self.delay == 0 else min(self.delay * self.factor, self.max_delay)
        return self.delay


class Supervisor:
    """Runs one recorder process for a data root until told to stop."""

    def __init__(self, config: str | None, data_root: str | None, policy: RestartPolicy | None = None,
                 out: IO[str] | None = None) -> None:
        self.config_path = config
        self.config = load_config(config)
        self.data_root = os.path.realpath(data_root or self.config.recorder.data_root)
        self.ep = endpoints(self.config, self.data_root)
        s = self.config.recorder
        self.policy = policy or RestartPolicy(max_restarts=s.restart_limit, window=s.restart_window_s)
        self.out = out or sys.stdout
        self.restarts = 0
        self.stopping = False
        self.child: subprocess.Popen[str] | None = None
        self._locks: list[int] = []

    def _lock(self) -> None:
        self._locks.append(lock_endpoints(self.ep))
        internal = os.path.join(self.data_root, "_recorder")
        os.makedirs(internal, exist_ok=True)
        self._locks.append(take_lock(os.path.join(internal, "supervisor.lock"),
                                     f"{self.data_root}: a recorder already runs on this data root", mode=0o644))

    def _spawn(self) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "recorder.router", "--supervised",
               "--data-root", self.data_root, "--restarts", str(self.restarts)]
        if self.config_path:
            cmd += ["--config", self.config_path]
        env = None
        if self.restarts and os.environ.get("RECORDER_FAULT_ONCE"):
            # test seam: a fault injected by environment fires in the first recorder only
            env = {k: v for k, v in os.environ.items() if k != "RECORDER_FAULT"}
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)

    def _await_ready(self, child: subprocess.Popen[str], timeout: float = 60.0) -> bool:
        assert child.stdout is not None
        ready = threading.Event()

        def pump(stream: IO[str]) -> None:
            for line in stream:
                if line.startswith("READY "):
                    self.out.write(line[:-1] + "\n" if line.endswith("\n") else line + "\n")
                    self.out.flush()
                    ready.set()
                else:
                    sys.stderr.write(line)

        threading.Thread(target=pump, args=(child.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if child.poll() is not None or time.monotonic() > deadline or self.stopping:
                return False
        return True

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (exit 0 after a graceful stop) or giving up (1)."""
        self._lock()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            while True:
                started = time.monotonic()
                self.child = self._spawn()
                self._await_ready(self.child)
                if self.stopping and self.child.poll() is None:
                    self.child.send_signal(signal.SIGTERM)
                rc = self._wait(self.child)
                if self.stopping:
                    return 0 if rc == 0 else 1
                if rc == EXIT_CONFIG:
                    print("recorder: the recorder refused to start (see above); not restarting", file=sys.stderr)
                    return EXIT_CONFIG
                delay = self.policy.on_exit(time.monotonic(), time.monotonic() - started)
                if delay is None:
                    print(f"recorder: {self.policy.max_restarts} crashes within {self.policy.window:g} s; "
                          "giving up", file=sys.stderr)
                    return 1
                self.restarts += 1
                print(f"recorder: recorder pid {self.child.pid} exited with {rc}; restart #{self.restarts} "
                      f"in {delay:.2f} s", file=sys.stderr, flush=True)
                end = time.monotonic() + delay
                while not self.stopping and time.monotonic() < end:
                    time.sleep(min(0.05, max(0.0, end - time.monotonic())))
                if self.stopping:
                    return 0
        finally:
            if self.child is not None and self.child.poll() is None:
                self.child.kill()
                self.child.wait()
            for fd in self._locks:
                os.close(fd)

    def _wait(self, child: subprocess.Popen[str]) -> int:
        stop_deadline: float | None = None
        while True:
            try:
                return child.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping:
                stop_deadline = stop_deadline or time.monotonic() + 15.0
                if time.monotonic() > stop_deadline:
                    child.kill()  # did not drain in time; recovery on next start is safe
