"""Where a recorder listens: its run directory, endpoints and endpoint lock."""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass

from .config import Config
from .exceptions import RecorderError


@dataclass(frozen=True)
class Endpoints:
    """The ingress (PULL) and control (ROUTER) endpoints of one recorder."""

    run_dir: str
    ingress: str
    control: str


def endpoints(config: Config, data_root: str) -> Endpoints:
    """Endpoints from the config, or ipc sockets in a short, owner-only run directory.

    ipc paths are limited to about 107 bytes, so the default run directory
    lives under /tmp and is named by a hash of the data root.
    """
    s = config.recorder
    root = os.path.realpath(data_root)
    run_dir = s.run_dir or f"/tmp/recorder-{os.getuid()}/{hashlib.sha256(root.encode()).hexdigest()[:12]}"
    ingress = s.endpoint or f"ipc://{run_dir}/ingress"
    control = s.control_endpoint or f"ipc://{run_dir}/control"
    for ep in (ingress, control):
        if ep.startswith("ipc://") and len(ep) - 6 > 100:
            raise RecorderError(f"ipc path too long ({len(ep) - 6} bytes > 100): {ep}; set recorder.run_dir")
    return Endpoints(run_dir, ingress, control)


def prepare_run_dir(ep: Endpoints) -> None:
    """Create the run directory with owner-only permissions."""
    os.makedirs(ep.run_dir, mode=0o700, exist_ok=True)
    os.chmod(ep.run_dir, 0o700)


def take_lock(path: str, busy: str, dir_fd: int | None = None, mode: int = 0o600) -> int:
    """Hold an exclusive ``flock`` on ``path`` for as long as the returned fd stays open.

    The file records the holder's pid, so a refusal can name it.

    Raises:
        RecorderError: ``busy`` plus the holder's pid, when another process holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RecorderError(f"{busy} (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def lock_endpoints(ep: Endpoints) -> int:
    """Hold a lock beside ipc endpoints, so a second recorder cannot steal them.

    Raises:
        RecorderError: another recorder serves these endpoints.
    """
    prepare_run_dir(ep)
    return take_lock(os.path.join(ep.run_dir, "lock"), f"{ep.ingress} is served by another recorder")
