"""The endpoint lock of a running recorder: its run directory, taken and released around a run."""

from __future__ import annotations

import os

from ..exceptions import RecorderError
from ..schema.endpoints import Endpoints
from ..storage.locks import release_lock, take_lock

__all__ = ["lock_endpoints", "prepare_run_dir", "release_endpoints"]


def prepare_run_dir(ep: Endpoints) -> None:
    """Create the run directory with owner-only permissions."""
    os.makedirs(ep.run_dir, mode=0o700, exist_ok=True)
    os.chmod(ep.run_dir, 0o700)


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
