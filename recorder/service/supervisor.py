"""Start the recorder process, restart it when it dies, stop it gracefully.

The restart policy is a pure class driven by the caller's clock, so its
rules (backoff, a limit within a window, reset after a stable run) are
tested without processes. The supervisor spawns the recorder with
``sys.executable -m recorder.router`` (a fresh interpreter, never a fork of
one that imported ZeroMQ) and holds the endpoint and data-root locks for as
long as it runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ..schema.endpoints import endpoints
from ..storage.locks import take_lock
from ._run import lock_endpoints, release_endpoints
from ..schema.config import load_config, metrics_address
from ..exceptions import ConfigError, UsageError
from ..schema.registry import Registry
from ..storage import INTERNAL_DIR

if TYPE_CHECKING:
    from ._metrics import MetricsServer
    from ..publish._keeper import PublisherKeeper

__all__ = ["RestartPolicy", "Supervisor"]

EXIT_CONFIG = 2  # the recorder refused its config or lock: restarting will not help
EXIT_RUNTIME = 3  # the recorder kept crashing, or failed while stopping
_log = logging.getLogger("recorder.supervisor")


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


def _check_data_root(root: str) -> None:
    """Refuse, in one line, a data root that cannot be one: a file, or a directory this user cannot write.

    Raises:
        UsageError: naming the data root and what is wrong with it.
    """
    probe = root
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    where = root if probe == root else f"{root}: {probe}"
    if not os.path.isdir(probe):
        raise UsageError("data root", f"{where} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError("data root", f"{where} is not writable (permissions or a read-only file system)")


class Supervisor:
    """Runs one recorder process for a data root until told to stop.

    The config is validated whole (models imported, paths checked) and the
    data root checked before anything is created on disk.

    Args:
        config: registry TOML, or None for the packaged default.
        data_root: overrides ``recorder.data_root``.
        policy: when to restart; default from ``restart_limit`` and ``restart_window_s``.
        out: where READY and METRICS lines go (default: stdout).
        log_format, log_level: passed to the recorder process (default: the config's).
        metrics: Prometheus address (``PORT`` or ``HOST:PORT``); overrides ``metrics_address``.

    Raises:
        ConfigError: the config is wrong or a model does not import.
        UsageError: the data root or the metrics address cannot be used.
    """

    def __init__(self, config: str | None, data_root: str | None, policy: RestartPolicy | None = None,
                 out: IO[str] | None = None, *, log_format: str | None = None, log_level: str | None = None,
                 metrics: str | None = None) -> None:
        self.config_path = config
        self.config = load_config(config)
        Registry.from_config(self.config)
        s = self.config.recorder
        self.data_root = os.path.realpath(data_root or s.data_root)
        _check_data_root(self.data_root)
        self.ep = endpoints(self.config, self.data_root)
        self.log_format = log_format or s.log_format
        self.log_level = log_level or s.log_level
        address = s.metrics_address if metrics is None else metrics
        try:
            self.metrics_at = metrics_address(address) if address else None
        except ValueError as e:
            raise UsageError("--metrics", str(e)) from e
        self.policy = policy or RestartPolicy(max_restarts=s.restart_limit, window=s.restart_window_s)
        self.out = out or sys.stdout
        self.restarts = 0
        self.last_fatal = ""  # the reason the recorder gave for its last fatal exit (its FATAL line)
        self.stopping = False
        self.child: subprocess.Popen[str] | None = None
        self._endpoint_lock: int | None = None
        self._locks: list[int] = []
        self._metrics: MetricsServer | None = None
        self._publisher: PublisherKeeper | None = None

    def _lock(self) -> None:
        self._endpoint_lock = lock_endpoints(self.ep)
        internal = os.path.join(self.data_root, INTERNAL_DIR)
        try:
            os.makedirs(internal, exist_ok=True)
            self._locks.append(take_lock(os.path.join(internal, "supervisor.lock"),
                                         f"{self.data_root}: a recorder already runs on this data root",
                                         mode=0o644))
        except OSError as e:
            raise UsageError("data root", f"{self.data_root}: cannot use it: {e.strerror or e}") from e

    def _unlock(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        if self._endpoint_lock is not None:
            release_endpoints(self.ep, self._endpoint_lock)  # sockets, lock and the run directory
            self._endpoint_lock = None

    def _serve_metrics(self) -> None:
        if self.metrics_at is None:
            return
        try:
            from ._metrics import MetricsServer
        except ImportError as e:
            raise ConfigError(self.config.source, "recorder.metrics_address",
                              f"needs the prometheus_client package (pip install 'recorder[metrics]'): {e}") from e
        curve = None
        s = self.config.recorder
        if s.curve_server_secret:
            import zmq.auth

            # the supervisor asks with the recorder's own key pair: list server.key in curve_clients_dir
            public, secret = zmq.auth.load_certificate(s.curve_server_secret)
            if secret is not None:
                curve = (public, public, secret)
        self._metrics = MetricsServer(*self.metrics_at, self.ep.control, s.metrics_timeout_s, curve,
                                      lambda: self.restarts)
        _log.info("metrics at %s", self._metrics.url)
        self.out.write("METRICS " + json.dumps({"url": self._metrics.url}) + "\n")
        self.out.flush()

    def _start_publisher(self) -> None:
        """With a [publish] table: a publisher process beside the recorder, restarted on its own terms."""
        if self.config.publish is None:
            return
        from ..publish._keeper import PublisherKeeper

        self._publisher = PublisherKeeper(self.data_root, self.config_path, self.log_format, self.log_level,
                                          self.out)
        self._publisher.start()

    def _spawn(self) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "recorder.router", "--supervised",
               "--data-root", self.data_root, "--restarts", str(self.restarts),
               "--log-format", self.log_format, "--log-level", self.log_level]
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
                if line.startswith("FATAL "):
                    self.last_fatal = line[6:].strip()
                    continue
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
        """Supervise until SIGTERM/SIGINT (0 after a clean stop), a refused start (2) or giving up (3).

        Raises:
            RecorderError: another recorder runs on the data root, or the
                data root or metrics address cannot be used.
        """
        try:
            self._lock()
            self._serve_metrics()
            self._start_publisher()
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            _log.info("supervising a recorder on %s (config %s)", self.data_root, self.config.source,
                      extra={"fields": {"pid": os.getpid()}})
            return self._supervise()
        finally:
            if self.child is not None and self.child.poll() is None:
                self.child.kill()
                self.child.wait()
            if self._publisher is not None:
                self._publisher.stop()
            if self._metrics is not None:
                self._metrics.close()
            self._unlock()

    def _supervise(self) -> int:
        while True:
            started = time.monotonic()
            self.child = self._spawn()
            if self._await_ready(self.child):
                _log.info("recorder pid %d is ready (restart %d)", self.child.pid, self.restarts)
            if self.stopping and self.child.poll() is None:
                self.child.send_signal(signal.SIGTERM)
            rc = self._wait(self.child)
            if self.stopping:
                if rc == 0:
                    _log.info("stopped cleanly (recorder pid %d exited with 0)", self.child.pid)
                    return 0
                _log.error("recorder pid %d exited with %d while stopping", self.child.pid, rc)
                return EXIT_RUNTIME
            if rc == EXIT_CONFIG:
                _log.error("the recorder refused to start (see above); not restarting")
                return EXIT_CONFIG
            delay = self.policy.on_exit(time.monotonic(), time.monotonic() - started)
            if delay is None:
                last = (self.last_fatal or (f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"))
                _log.error("giving up (exit %d): %d crashes within %g s, the last: %s", EXIT_RUNTIME,
                           self.policy.max_restarts, self.policy.window, last)
                return EXIT_RUNTIME
            self.last_fatal = ""
            self.restarts += 1
            _log.warning("recorder pid %d exited with %d; restart #%d in %.2f s", self.child.pid, rc,
                         self.restarts, delay)
            end = time.monotonic() + delay
            while not self.stopping and time.monotonic() < end:
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            if self.stopping:
                _log.info("stopped cleanly (while waiting to restart the recorder)")
                return 0

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
