"""The supervisor's side of publication: keep one publisher process running beside the recorder.

Its own thread and its own backoff: a publisher that crashes, aborts inside
delta-rs or hangs in an S3 call is restarted (0.5 s doubling to 30 s, reset
after a minute up), never counted toward the recorder's restart limit, and
never changes ``recorder run``'s exit status. Exit 2 (publication stopped
for a reason a restart cannot fix) leaves it stopped, with the error in its
log and in ``recorder stats``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from typing import IO

__all__ = ["PublisherKeeper"]

_log = logging.getLogger("recorder.supervisor")
_EXIT_STOP = 2  # the publisher's "do not restart me" (recorder.publish._service.EXIT_STOP)


class PublisherKeeper(threading.Thread):
    """Runs ``python -m recorder.publish`` for one data root until :meth:`stop`.

    Each start is announced on ``out`` as ``PUBLISHER {"pid": N, "restarts": R}``.
    """

    def __init__(self, data_root: str, config_path: str | None, log_format: str, log_level: str,
                 out: IO[str], out_lock: threading.Lock | None = None) -> None:
        super().__init__(name="publisher-keeper", daemon=True)
        self.cmd = [sys.executable, "-m", "recorder.publish", "--data-root", data_root,
                    "--log-format", log_format, "--log-level", log_level]
        if config_path:
            self.cmd += ["--config", config_path]
        self.out = out
        self.out_lock = out_lock or threading.Lock()
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def run(self) -> None:
        delay = 0.0
        while not self.stopping.is_set():
            started = time.monotonic()
            self.child = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            with self.out_lock:
                self.out.write("PUBLISHER " + json.dumps({"pid": self.child.pid, "restarts": self.restarts}) + "\n")
                self.out.flush()
            rc = self.child.wait()
            if self.stopping.is_set():
                return
            if rc == _EXIT_STOP:
                _log.error("publisher pid %d stopped publication (exit %d, see its log); not restarting",
                           self.child.pid, rc)
                return
            delay = 0.5 if time.monotonic() - started > 60 or delay == 0 else min(delay * 2, 30.0)
            self.restarts += 1
            _log.warning("publisher pid %d exited with %d; restart #%d in %.1f s (the recorder is not affected)",
                         self.child.pid, rc, self.restarts, delay)
            self.stopping.wait(delay)

    def stop(self, grace: float = 15.0) -> None:
        """Stop the publisher: SIGTERM (it finishes the commit in hand), SIGKILL after ``grace`` seconds."""
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.join(timeout=5)
