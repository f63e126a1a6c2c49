"""What a writer reads beside its journals: sealed segments' tails, earlier chain heads, manifests.

Kept out of ``writer.py`` so that module holds the write path only. Nothing
here writes.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from . import _durable, formats
from .catalog import MANIFEST_SUFFIX, TOMBSTONE_SUFFIX
from ..exceptions import RecorderError
from .journal import EventSink

__all__ = ["SEALED_ROWS", "SEALED_TAIL", "EventSink", "has_manifest", "manifest_of", "pseqs_after",
           "read_all", "recent_time", "sealed_tail", "segment_counts", "stored_head"]

SEALED_TAIL = 4 << 20  # bytes of a sealed journal's end read for de-duplication
SEALED_ROWS = 8192  # rows of a Parquet segment's end read likewise


def read_all(fd: int) -> bytes:
    """Everything from ``fd``'s position to its end."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def recent_time(state: str) -> float:
    """The wall time in a ``"recent <time>"`` state (0 for the older plain ``"recent"``)."""
    try:
        return float(state.split(" ", 1)[1])
    except (IndexError, ValueError):
        return 0.0


def sealed_tail(root_fd: int, rel: str) -> list[dict[str, Any]]:
    """(producer, pseq) of the last records of a sealed segment, from its journal or Parquet file."""
    return [{"producer": p, "pseq": q} for p, q in pseqs_after(root_fd, rel, 0, SEALED_TAIL)]


class _Numbers(msgspec.Struct):
    seq: int = 0
    producer: str = ""
    pseq: int = 0


_numbers = msgspec.json.Decoder(_Numbers)
_STEP = 1 << 20


def pseqs_after(root_fd: int, rel: str, upto: int, limit: int | None = None) -> list[tuple[str, int]]:
    """(producer, pseq) of every record line of ``rel`` (a journal, or its converted file, Parquet, once the
    journal is gone) whose recorder seq is above ``upto``: read from the end back to the first line at or
    below (or, with ``limit``, no further back than that many bytes or SEALED_ROWS rows)."""
    *dirs, name = rel.split("/")
    try:
        dir_fd = _durable.open_dirs(root_fd, dirs, rel)
    except RecorderError:
        return []
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            rows = _converted_after(dir_fd, formats.stem(name), upto)
            return rows[-SEALED_ROWS:] if limit is not None else rows
        with os.fdopen(fd, "rb") as f:
            return _journal_after(f.fileno(), upto, limit)
    finally:
        _durable.close(dir_fd)


def _journal_after(fd: int, upto: int, limit: int | None) -> list[tuple[str, int]]:
    end = os.fstat(fd).st_size
    stop = 0 if limit is None else max(0, end - limit)
    out: list[tuple[str, int]] = []
    rest = b""  # the start of the line that straddles the chunk read before
    while end > stop:
        start = max(stop, end - _STEP)
        chunk = os.pread(fd, end - start, start) + rest
        lines = chunk.split(b"\n")
        rest = lines.pop(0) if start > 0 else b""
        for ln in reversed(lines):
            if not ln:
                continue
            try:
                n = _numbers.decode(ln)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a header, or a torn line
            if n.seq and n.seq <= upto:
                return out
            if n.producer and n.pseq:
                out.append((n.producer, n.pseq))
        end = start
    return out


def _converted_after(dir_fd: int, stem: str, upto: int) -> list[tuple[str, int]]:
    """What ``pseqs_after`` gives from the converted data file of the segment ``stem`` (of whichever
    format that converts it is there), reading three columns of the rows after ``upto``."""
    for fmt in map(formats.get, formats.names()):
        if not fmt.converts:
            continue
        try:
            fd = os.open(fmt.data_name(stem), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        break
    else:
        return []
    with os.fdopen(fd, "rb") as f:
        t = fmt.read(f, columns=["seq", "producer", "pseq"], after_seq=upto)
    return [(p, q) for p, q in zip(t.column("producer").to_pylist(), t.column("pseq").to_pylist())
            if isinstance(p, str) and isinstance(q, int)]


def _load(dir_fd: int, name: str) -> Any:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(read_all(fd))
    finally:
        os.close(fd)


def manifest_of(root_fd: int, rel: str) -> dict[str, Any] | None:
    """The manifest beside the journal ``rel`` (a dict), or None if there is none (or it is unreadable)."""
    *dirs, name = rel.split("/")
    try:
        dir_fd = _durable.open_dirs(root_fd, dirs, rel)
    except RecorderError:
        return None
    try:
        doc = _load(dir_fd, name[: -len(".jsonl")] + MANIFEST_SUFFIX)
    except (msgspec.DecodeError, OSError):
        return None
    finally:
        _durable.close(dir_fd)
    return doc if isinstance(doc, dict) else None


def segment_counts(root_fd: int, rel: str) -> dict[str, Any]:
    """``records`` and ``bytes`` of a sealed segment's journal, from its manifest, else from the journal itself."""
    m = manifest_of(root_fd, rel)
    if m is not None:
        return {"records": m.get("records"), "bytes": m.get("bytes")}
    *dirs, name = rel.split("/")
    try:
        dir_fd = _durable.open_dirs(root_fd, dirs, rel)
    except RecorderError:
        return {"records": None, "bytes": None}
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return {"records": None, "bytes": None}
    finally:
        _durable.close(dir_fd)
    try:
        data = read_all(fd)
    finally:
        os.close(fd)
    return {"records": max(0, data.count(b"\n") - 1), "bytes": len(data)}  # lines after the header


def has_manifest(root_fd: int, rel: str) -> bool:
    """True if the journal ``rel`` has a manifest beside it."""
    *dirs, name = rel.split("/")
    try:
        dir_fd = _durable.open_dirs(root_fd, dirs, rel)
    except RecorderError:
        return False
    try:
        os.stat(name[: -len(".jsonl")] + MANIFEST_SUFFIX, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False
    finally:
        _durable.close(dir_fd)


def stored_head(dir_fd: int, stem: str) -> str | None:
    """The chain head a closed segment left on disk: its manifest's, else its checkpoint's, else its tombstone's."""
    for fname, key in ((stem + MANIFEST_SUFFIX, "chain_head"), (stem + ".jsonl.head", "head"),
                       (stem + TOMBSTONE_SUFFIX, "manifest")):
        doc = _load(dir_fd, fname)
        if doc is None:
            continue
        value = doc.get(key)
        if isinstance(value, dict):
            value = value.get("chain_head")
        if isinstance(value, str):
            return value
    return None
