"""Every write, fsync, truncate, rename and directory fsync lives here.

Keeping them in one module makes the durability story reviewable in one
place and gives tests one seam for faults. ``RECORDER_FAULT`` (environment)
names points at which a child process kills itself or slows down, e.g.
``RECORDER_FAULT=after_write:kill:3`` (the third time), or
``RECORDER_FAULT=before_fsync:sleep_ms:20`` (every time), or only for the
files whose path holds a text: ``RECORDER_FAULT=before_fsync@raw_action:sleep_ms:20``
(a rule's ``@TEXT`` matches the path the point is passed). Under a supervisor,
``RECORDER_FAULT_ONCE=1`` limits the fault to the first recorder it starts.

``start_oplog()`` (tests only) records every operation below into a list,
with file identities (inode numbers), for the power-loss simulation of
tests/unit/test_powerloss.py; off, it costs one ``is None`` test per call.
Entries are tuples: ``("root", dir, path)``, ``("mkdir", dir, name, child)``,
``("create", dir, name, file)`` (a new file, or an old name truncated),
``("write", file, offset, data)``, ``("sync", file, "fdatasync"|"fsync")``,
``("truncate", file, size)``, ``("rename", dir, old, new)``,
``("unlink", dir, name)``, ``("dirsync", dir)`` and ``("mark", kind, value)``
(``oplog_mark``, e.g. an acknowledgement).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from ..exceptions import DurabilityError, StorageFull, Unwritable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC

FaultHook = Callable[[str], None]
_hook: FaultHook | None = None


def _env_hook(spec: str) -> FaultHook:
    rules: list[tuple[str, str, float]] = []
    for item in spec.split(","):
        point, action, *arg = item.strip().split(":")
        rules.append((point, action, float(arg[0]) if arg else 1.0))
    counts: dict[str, int] = {}

    def hook(point: str) -> None:
        for p, action, arg in rules:
            name, _, where = p.partition("@")
            if name != point or where not in _where:
                continue
            counts[p] = counts.get(p, 0) + 1
            if action == "kill" and counts[p] >= arg:
                os.kill(os.getpid(), signal.SIGKILL)
            elif action == "sleep_ms":
                time.sleep(arg / 1000)

    return hook


if os.environ.get("RECORDER_FAULT"):
    _hook = _env_hook(os.environ["RECORDER_FAULT"])


def set_fault_hook(hook: FaultHook | None) -> None:
    """Install an in-process fault hook (tests only); None removes it."""
    global _hook
    _hook = hook


_where = ""  # the path the current fault point is about (for RECORDER_FAULT's POINT@TEXT rules)


def fault(point: str, where: str = "") -> None:
    """Run the fault hook at a named point; free when no hook is set."""
    global _where
    if _hook is not None:
        _where = where
        _hook(point)


Op = tuple[Any, ...]
_oplog: list[Op] | None = None
_oplog_lock = threading.Lock()


def start_oplog() -> list[Op]:
    """Start recording every operation of this module (tests only); returns the live log."""
    global _oplog
    _oplog = []
    return _oplog


def stop_oplog() -> list[Op]:
    """Stop recording; returns what was recorded."""
    global _oplog
    with _oplog_lock:
        log, _oplog = _oplog, None
    return log or []


def oplog_mark(kind: str, value: Any) -> None:
    """Put a marker (e.g. "this record was acknowledged") into the op log, if one is on."""
    _note("mark", kind, value)


def _note(*op: Any) -> None:
    with _oplog_lock:
        if _oplog is not None:
            _oplog.append(op)


def _ino(fd: int) -> int:
    return os.fstat(fd).st_ino


def _ino_at(dir_fd: int, name: str) -> int:
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino


#: errors of opening or creating a path that belong to that path, not to the device
_PATH_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG,
                          errno.EISDIR, errno.EINVAL, errno.EILSEQ, errno.ENOENT, errno.EMLINK, errno.EEXIST})


def _wrap(e: OSError, path: str, op: str) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(path, f"{op}: {os.strerror(e.errno)}")
    return DurabilityError(path, op, e.errno, e.strerror or str(e))


def _wrap_path(e: OSError, path: str, op: str) -> Exception:
    """Like _wrap, but an error that belongs to this path alone becomes Unwritable."""
    if e.errno in _PATH_ERRNOS:
        reason = e.strerror or str(e)
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            reason = "a path part is a symlink or not a directory"
        return Unwritable(path, op, e.errno, reason)
    return _wrap(e, path, op)


def open_root(path: str) -> int:
    """Open (creating it) the data root directory; the one place a symlink may lead."""
    try:
        os.makedirs(path, exist_ok=True)
        fd = os.open(os.path.realpath(path), _DIR_FLAGS & ~os.O_NOFOLLOW)
        if _oplog is not None:
            _note("root", _ino(fd), os.path.realpath(path))
        return fd
    except OSError as e:
        raise _wrap(e, path, "open root") from e


def open_dirs(root_fd: int, parts: list[str], label: str) -> int:
    """Open the directory ``parts`` below ``root_fd``, creating what is missing.

    Every component is opened with O_NOFOLLOW, so a symlink planted anywhere
    below the root cannot lead a write out of it; each new directory is
    fsync'd into its parent before it is used.
    """
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                if _oplog is not None:
                    _note("mkdir", _ino(fd), part, _ino_at(fd, part))
                fault("before_dir_fsync")
                os.fsync(fd)
                if _oplog is not None:
                    _note("dirsync", _ino(fd))
            except FileExistsError:
                pass
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except OSError as e:
        os.close(fd)
        raise _wrap_path(e, label, "open dir") from e


def open_append(dir_fd: int, name: str, label: str) -> tuple[int, bool]:
    """Open ``name`` for appending; returns (fd, created). New files are fsync'd into the dir."""
    try:
        try:
            fd = os.open(name, _APPEND_FLAGS | os.O_EXCL, 0o644, dir_fd=dir_fd)
            created = True
        except FileExistsError:
            fd = os.open(name, _APPEND_FLAGS & ~os.O_CREAT, dir_fd=dir_fd)
            created = False
        if created:
            if _oplog is not None:
                _note("create", _ino(dir_fd), name, _ino(fd))
            fault("before_dir_fsync")
            os.fsync(dir_fd)
            if _oplog is not None:
                _note("dirsync", _ino(dir_fd))
        return fd, created
    except OSError as e:
        raise _wrap_path(e, label, "open") from e


def append(fd: int, data: bytes, label: str) -> None:
    """Append ``data`` with as few write calls as the kernel allows (one, normally)."""
    view = memoryview(data)
    try:
        while view:
            if _oplog is not None:  # the offset after the write (O_APPEND moves it to the end first)
                n = os.write(fd, view)
                _note("write", _ino(fd), os.lseek(fd, 0, os.SEEK_CUR) - n, bytes(view[:n]))
            else:
                n = os.write(fd, view)
            view = view[n:]
            fault("after_write")
    except OSError as e:
        raise _wrap(e, label, "write") from e


def sync(fd: int, label: str) -> None:
    """fdatasync ``fd``. A failure is final for this descriptor (never retried)."""
    try:
        fault("before_fsync", label)
        os.fdatasync(fd)
        if _oplog is not None:
            _note("sync", _ino(fd), "fdatasync")
    except OSError as e:
        raise _wrap(e, label, "fdatasync") from e
    fault("after_fsync")


def truncate(fd: int, size: int, label: str) -> None:
    """Cut a file back to ``size`` bytes and make the cut durable."""
    try:
        os.ftruncate(fd, size)
        if _oplog is not None:
            _note("truncate", _ino(fd), size)
        os.fsync(fd)
        if _oplog is not None:
            _note("sync", _ino(fd), "fsync")
    except OSError as e:
        raise _wrap(e, label, "truncate") from e


def _rename_into_place(dir_fd: int, tmp: str, name: str) -> None:
    """The end of every atomic create: rename the synced temp file, then fsync the directory."""
    fault("before_rename")
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if _oplog is not None:
        _note("rename", _ino(dir_fd), tmp, name)
    fault("before_dir_fsync")
    os.fsync(dir_fd)
    if _oplog is not None:
        _note("dirsync", _ino(dir_fd))


def _discard(dir_fd: int, tmp: str) -> None:
    """Remove a failed atomic create's temp file; a failure here never masks the original one."""
    try:
        os.unlink(tmp, dir_fd=dir_fd)
        if _oplog is not None:
            _note("unlink", _ino(dir_fd), tmp)
    except OSError:
        pass


def _create_whole(dir_fd: int, name: str, label: str, op: str, fill: Callable[[int, str], None]) -> None:
    """The one atomic create: ``fill`` writes, fsyncs and closes the hidden temp file (``.NAME.tmp-PID``,
    which no ``*.parquet``/``*.jsonl`` glob matches) it is given (fd, name); then rename, dir fsync."""
    tmp = f".{name}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        fill(fd, tmp)
        _rename_into_place(dir_fd, tmp, name)
    except BaseException as e:  # the temp file goes whatever failed
        _discard(dir_fd, tmp)
        if isinstance(e, OSError):
            raise _wrap(e, label, op) from e
        raise


def write_new(dir_fd: int, name: str, data: bytes, label: str) -> None:
    """Write a whole new file atomically: temp file, fsync, rename, dir fsync."""
    def fill(fd: int, tmp: str) -> None:
        try:
            if _oplog is not None:
                _note("create", _ino(dir_fd), tmp, _ino(fd))
            append(fd, data, label)
            os.fsync(fd)
            if _oplog is not None:
                _note("sync", _ino(fd), "fsync")
        finally:
            os.close(fd)

    _create_whole(dir_fd, name, label, "write", fill)


def publish(dir_fd: int, name: str, write: Callable[[BinaryIO], None], label: str) -> None:
    """Create ``name`` whole or not at all: ``write`` fills a hidden temp file, then
    fsync, rename into place, fsync the directory. For files a library writes
    (Parquet), which never fsync by themselves.
    """
    def fill(fd: int, tmp: str) -> None:
        if _oplog is not None:
            _note("create", _ino(dir_fd), tmp, _ino(fd))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if _oplog is not None:  # the library wrote it in pieces; all of them precede the fsync
                _note("write", _ino(fd), 0, _read_back(dir_fd, tmp))
            fault("before_fsync")
            os.fsync(f.fileno())
            if _oplog is not None:
                _note("sync", _ino(fd), "fsync")

    _create_whole(dir_fd, name, label, "publish", fill)


def _read_back(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def sweep_temp(dir_fd: int) -> list[str]:
    """Remove the hidden temp files (``.NAME.tmp-PID``) a crash left in a directory.

    Files of this process are left alone: another thread may be writing one.
    """
    gone = []
    mine = f".tmp-{os.getpid()}"
    for name in os.listdir(dir_fd):
        if name.startswith(".") and ".tmp-" in name and not name.endswith(mine):
            try:
                os.unlink(name, dir_fd=dir_fd)
                gone.append(name)
                if _oplog is not None:
                    _note("unlink", _ino(dir_fd), name)
            except FileNotFoundError:
                pass
    if gone:
        os.fsync(dir_fd)
        if _oplog is not None:
            _note("dirsync", _ino(dir_fd))
    return gone


def unlink(dir_fd: int, name: str, label: str) -> None:
    """Remove ``name`` and make the removal durable (fsync the directory)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        if _oplog is not None:
            _note("unlink", _ino(dir_fd), name)
        os.fsync(dir_fd)
        if _oplog is not None:
            _note("dirsync", _ino(dir_fd))
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _wrap(e, label, "unlink") from e


def rename(dir_fd: int, old: str, new: str, label: str, read_only: bool = False) -> None:
    """Rename within one directory (optionally making it read-only) and fsync the dir."""
    try:
        if read_only:
            os.chmod(old, 0o444, dir_fd=dir_fd, follow_symlinks=False)
        os.rename(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if _oplog is not None:
            _note("rename", _ino(dir_fd), old, new)
        os.fsync(dir_fd)
        if _oplog is not None:
            _note("dirsync", _ino(dir_fd))
    except OSError as e:
        raise _wrap(e, label, "rename") from e


def close(fd: int) -> None:
    """Close a descriptor, ignoring EBADF from a double close."""
    try:
        os.close(fd)
    except OSError:
        pass
