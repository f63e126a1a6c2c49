"""Exclusive file locks (``flock``) that name their holder: the data root, the publication, the supervisor, the endpoints."""

from __future__ import annotations

import fcntl
import os

from ..exceptions import RecorderError

__all__ = ["release_lock", "take_lock"]


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
