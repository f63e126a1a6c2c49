"""Where a recorder listens: its run directory, endpoints and endpoint lock."""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass

from ..schema.config import Config
from ..exceptions import RecorderError


@dataclass(frozen=True)
class Endpoints:
    """The ingress (PULL) and control (ROUTER) endpoints of one recorder."""

    run_dir: str
    ingress: str
    control: str
    default_run_dir: bool = True  # derived from the data root, not configured: removed after a stop


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
    return Endpoints(run_dir, ingress, control, not s.run_dir)


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
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RecorderError(f"{busy} (pid {holder})") from None
        # The holder removes a lock file before it lets go of it (release_lock): a lock
        # taken on a file that is no longer at `path` is worthless, so take the new one.
        try:
            here = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            here = None
        mine = os.fstat(fd)
        if here is not None and (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def release_lock(path: str, fd: int) -> None:
    """Remove the lock file ``take_lock`` returned ``fd`` for, then let go of it (in that order)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def lock_endpoints(ep: Endpoints) -> int:
    """Hold a lock beside ipc endpoints, so a second recorder cannot steal them.

    Raises:
        RecorderError: another recorder serves these endpoints, or the run
            directory cannot be made.
    """
    for attempt in range(3):
        try:
            prepare_run_dir(ep)
            return take_lock(os.path.join(ep.run_dir, "lock"), f"{ep.ingress} is served by another recorder")
        except FileNotFoundError:
            continue  # a stopping recorder removed its empty run directory just now: make it again
        except OSError as e:
            raise RecorderError(f"{ep.run_dir}: cannot make the run directory or its lock: "
                                f"{e.strerror or e}") from e
    raise RecorderError(f"{ep.run_dir}: the run directory keeps disappearing")


def release_endpoints(ep: Endpoints, lock_fd: int) -> None:
    """After a stop: remove the ipc socket files and the lock, and the run directory if it is left empty.

    Only the holder of the endpoint lock calls this; a configured ``run_dir``
    is kept (the files in it are still removed).
    """
    for endpoint in (ep.ingress, ep.control):
        if endpoint.startswith("ipc://"):
            try:
                os.unlink(endpoint[6:])
            except FileNotFoundError:
                pass
    release_lock(os.path.join(ep.run_dir, "lock"), lock_fd)
    if ep.default_run_dir:
        try:
            os.rmdir(ep.run_dir)
        except OSError:
            pass  # not empty (someone else's files) or already gone: leave it
