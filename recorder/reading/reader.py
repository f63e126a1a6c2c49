"""Read recorded records back in order, and verify journals line by line."""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec

from ._order import Key, LineKeys, late_records, reorder
from .._progress import Progress
from ..exceptions import CorruptionError, NotARecording, UsageError
from ..storage import INTERNAL_DIR, formats
from ..storage.catalog import Segment, sealed_segments
from ._segcheck import check_segments
from ._verify import Problem, verify_file

__all__ = ["read", "read_table", "data_files", "verify", "verify_file", "journal_files", "Problem",
           "check_recording", "recorded_types"]

_log = logging.getLogger("recorder.read")
#: called with each malformed line that reading skipped (file, line number and offset)
OnProblem = Callable[[CorruptionError], None]


def _paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """One path or many: a ``str`` is one path, never a sequence of characters."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _holds_recorder_files(path: Path) -> bool:
    for _dirpath, _dirnames, filenames in os.walk(path):
        if any(f.endswith(formats.DATA_SUFFIXES) for f in filenames):
            return True
    return False


def check_recording(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, if it is a recording: a data root, a directory below one, or one holding journals.

    Raises:
        NotARecording: it does not exist, is not a directory, or holds no recorder files.
    """
    p = Path(path)
    if not p.exists():
        raise NotARecording(str(p), "no such file or directory")
    if not p.is_dir():
        raise NotARecording(str(p), "not a directory (a data root is a directory)")
    absolute = p.resolve()
    if any((d / INTERNAL_DIR).is_dir() for d in (absolute, *absolute.parents)):
        return p
    if not _holds_recorder_files(p):
        raise NotARecording(str(p), f"not a recording (no {INTERNAL_DIR}/ directory and no journals)")
    return p


def journal_files(paths: Iterable[str | Path], internal: bool = False) -> list[Path]:
    """Every ``*.jsonl`` file under ``paths`` (files are taken as given), sorted."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            if not internal and INTERNAL_DIR in dirnames and Path(dirpath) == p:
                dirnames.remove(INTERNAL_DIR)
            dirnames.sort()
            found.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".jsonl"))
    return found


def _ts(value: str | datetime | None) -> datetime | None:
    if value is None or not isinstance(value, (str, datetime)):
        return None  # not a time (records of models that allow other shapes): no bound applies
    t = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    # A3CP times are UTC: a bound given without a zone (or as a bare date) means UTC.
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _lines(path: Path, on_problem: OnProblem | None = None, end: int | None = None) -> Iterator[dict[str, Any]]:
    """Whole, committed record lines (up to byte ``end``, if given); a malformed line raises, or goes to
    ``on_problem`` and is skipped."""
    with open(path, "rb") as f:
        first = True
        batch: list[dict[str, Any]] = []
        offset = 0
        for n, line in enumerate(f, 1):
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n") or (end is not None and offset > end):
                return  # a torn final line was never acknowledged; past ``end`` is not this read's
            if first:
                first = False
                continue  # header
            problem = None
            try:
                obj = msgspec.json.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as e:
                problem = CorruptionError(str(path), n, start, f"not valid JSON: {e}")
                problem.__cause__ = e
            else:
                if not isinstance(obj, dict):
                    problem = CorruptionError(str(path), n, start, "line is not a JSON object")
            if problem is not None:
                if on_problem is None:
                    raise problem
                on_problem(problem)
                continue
            batch.append(obj)
            if obj.get("commit") is True:  # only whole batches were ever acknowledged
                yield from batch
                batch.clear()


def read(
    root: str | Path,
    *,
    schema_type: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    strict: bool = False,
    on_problem: OnProblem | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield stored envelopes (metadata plus ``record``) in read order.

    Files are merged by the recorder's sequence number, except that each
    producer's records come in its own order (``pseq``): a record that a
    crash made late holds back the records of its producer that were
    stored before it with a higher ``pseq`` (docs/FORMAT.md, "Read order").
    This takes one light pass over the files before the first record. Time
    bounds apply to the record's own ``timestamp`` (``since`` inclusive,
    ``until`` exclusive). A whole line in the middle of a file that is not a
    JSON object is skipped and reported (to ``on_problem``, else as a logged
    warning naming the file and line), so one damaged line does not hide the
    good ones. Records appended after the read began are not yielded.

    Args:
        root: a data root, or a directory below one (``str`` or ``Path``).
        strict: raise at the first malformed line instead of skipping it.

    Raises:
        NotARecording: ``root`` does not exist or holds no recording.
        UsageError: ``since`` or ``until`` is not an ISO-8601 time.
        CorruptionError: with ``strict``, a whole line is not a JSON object.
    """
    lo, hi = _bound(since, "since"), _bound(until, "until")
    report: OnProblem | None = None
    if not strict:
        report = on_problem or _warn

    def keep(stype: Any, user: Any, session: Any, timestamp: Any) -> bool:
        if schema_type is not None and stype != schema_type:
            return False
        if user_id is not None and user != user_id:
            return False
        if session_id is not None and session != session_id:
            return False
        if lo is not None or hi is not None:
            t = _ts(timestamp)
            if t is None or (lo is not None and t < lo) or (hi is not None and t >= hi):
                return False
        return True

    files = data_files(root, schema_type=schema_type, user_id=user_id, session_id=session_id, since=lo, until=hi)
    ends: dict[Path, int] = {}
    late = late_records(heapq.merge(*(_keys(p, keep, ends) for p in files), key=itemgetter(0)))
    streams = [(e for e in _source(p, report, ends.get(p))
                if keep(e.get("schema_type"), e.get("user_id"), e.get("session_id"), e.get("timestamp")))
               for p in files]
    merged = heapq.merge(*streams, key=_seq)
    yield from reorder(merged, _key, late)


def _seq(e: dict[str, Any]) -> int:
    return int(e.get("seq", 0))


def _key(e: dict[str, Any]) -> Key:
    return int(e.get("seq", 0)), e.get("producer"), e.get("pseq")


class _Head(LineKeys, kw_only=True):
    """What the read order and the filters need of a record line (the record itself is only parsed)."""

    seq: Any = 0
    schema_type: Any = None
    commit: Any = None


_head = msgspec.json.Decoder(_Head)
_KEY_COLUMNS = ("seq", "schema_type", "timestamp", "user_id", "session_id", "producer", "pseq")


def _keys(path: Path, keep: Callable[[Any, Any, Any, Any], bool], ends: dict[Path, int]) -> Iterator[Key]:
    """(seq, producer, pseq) of the records of one file that ``read`` yields, in file order; where a
    journal's whole lines end goes into ``ends`` (what is appended later is left to a later read)."""
    fmt = formats.for_path(path)
    if fmt.converts:
        cols = fmt.read(path, columns=_KEY_COLUMNS).to_pydict()
        for seq, stype, ts, user, session, producer, pseq in zip(*(cols[c] for c in _KEY_COLUMNS)):
            if keep(stype, user, session, ts):
                yield int(seq), producer, pseq
        return
    batch: list[Key] = []
    with open(path, "rb") as f:
        header = f.readline()
        offset = len(header) if header.endswith(b"\n") else 0
        for line in f if offset else ():
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            try:
                h = _head.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # reported by the read itself
            if keep(h.schema_type, h.user_id, h.session_id, h.timestamp):
                batch.append((int(h.seq), h.producer, h.pseq))
            if h.commit is True:
                yield from batch
                batch.clear()
    ends[path] = offset  # whole lines: the read sees the same ones (and reports a bad one as before)


def _warn(problem: CorruptionError) -> None:
    _log.warning("skipped a malformed line: %s", problem)


def _bound(value: str | datetime | None, name: str) -> datetime | None:
    """A since/until bound; a string that is no ISO-8601 time is refused naming the argument."""
    try:
        return _ts(value)
    except ValueError as e:
        raise UsageError(name, f"{value!r} is not an ISO-8601 time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)") from e


def _source(path: Path, on_problem: OnProblem | None, end: int | None = None) -> Iterator[dict[str, Any]]:
    fmt = formats.for_path(path)
    return fmt.rows(path) if fmt.converts else _lines(path, on_problem, end)


def data_files(root: str | Path, *, schema_type: str | None = None, user_id: str | None = None,
               session_id: str | None = None, since: datetime | None = None,
               until: datetime | None = None) -> list[Path]:
    """The journals and converted data files (Parquet) that may hold matching records.

    Sealed segments are chosen from the catalog (no data is read to decide);
    open segments are always included. A Parquet file is used only where its
    journal is gone (a kept journal is read instead: it holds the exact text).

    Raises:
        NotARecording: ``root`` does not exist or holds no recording.
    """
    root = check_recording(root)
    catalog = sealed_segments(root)
    chosen: list[Path] = []
    for path, rel in walk_data_files(root):
        m = catalog.get(rel)
        if m is not None and not Segment(m).matches(schema_type, None, user_id, session_id, since, until):
            continue
        if m is None and schema_type is not None and path.suffix == formats.JOURNAL_SUFFIX \
                and _header_type(path) not in (schema_type, None):
            continue  # an open journal of another type: its header says so
        chosen.append(path)
    return chosen


def walk_data_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Every data file under ``root`` in path order, with its journal's path relative to the root
    (the catalog's key): journals, and Parquet files whose journal is gone (a kept journal holds
    the exact text and is read instead). The recorder's own ``_recorder`` folder is left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and INTERNAL_DIR in dirnames:
            dirnames.remove(INTERNAL_DIR)
        dirnames.sort()
        names = set(filenames)
        for f in sorted(filenames):
            if f.startswith(".") or not f.endswith(formats.DATA_SUFFIXES):
                continue
            journal = formats.journal_path(f)
            if journal != f and journal in names:
                continue
            yield Path(dirpath, f), os.path.relpath(os.path.join(dirpath, journal), root)


def recorded_types(root: str | Path) -> set[str]:
    """The schema types a recording holds records or segments of (from journal headers and the catalog).

    Raises:
        NotARecording: ``root`` does not exist or holds no recording.
    """
    files = data_files(root)
    found = {m["schema_type"] for m in sealed_segments(root).values()}
    found |= {t for t in (_header_type(p) for p in files if p.suffix == formats.JOURNAL_SUFFIX) if t is not None}
    return found


def _header_type(path: Path) -> str | None:
    """The schema type a journal's header names (None if unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = msgspec.json.decode(fh.readline())
    except (OSError, msgspec.DecodeError):
        return None
    t = head.get("schema_type") if isinstance(head, dict) else None
    return t if isinstance(t, str) else None


def read_table(root: str | Path, schema_type: str, *, config: str | Path | None = None,
               user_id: str | None = None, session_id: str | None = None,
               since: str | datetime | None = None, until: str | datetime | None = None) -> Any:
    """All records of one type as one ``pyarrow.Table`` (Parquet segments and journals alike).

    Segments are chosen through the catalog; rows are then filtered exactly.
    Columns added by newer minor versions are null for older rows. Nothing
    matching gives an empty table with the type's schema (newest version).

    Raises:
        NotARecording: ``root`` does not exist or holds no recording.
        UnknownSchemaError: ``schema_type`` is not in the registry of ``config``.
        UsageError: ``since`` or ``until`` is not an ISO-8601 time.
        CorruptionError: a whole line of a journal is not a JSON object.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..schema.config import load_config
    from ..schema.registry import Registry

    spec = Registry.from_config(load_config(config)).get(schema_type)
    lo, hi = _bound(since, "since"), _bound(until, "until")
    tables = []
    for p in data_files(root, schema_type=schema_type, user_id=user_id, session_id=session_id, since=lo, until=hi):
        fmt = formats.for_path(p)
        if fmt.converts:
            tables.append(fmt.read(p))
        else:
            envs = [e for e in _lines(p) if e.get("schema_type") == schema_type]
            if envs:
                tables.append(formats.to_table(envs, spec.model_for))
    if not tables:
        newest = ".".join(map(str, (list(spec.accepted[-1]) + [0, 0, 0])[:3]))
        return formats.empty_table(spec.model_for(newest))
    table = formats.concat(tables)
    mask = pc.equal(table["schema_type"], schema_type)
    if user_id is not None:
        mask = pc.and_(mask, pc.equal(table["user_id"], user_id))
    if session_id is not None:
        mask = pc.and_(mask, pc.equal(table["session_id"], session_id))
    if lo is not None:
        mask = pc.and_(mask, pc.greater_equal(table["timestamp"], pa.scalar(lo, table.schema.field("timestamp").type)))
    if hi is not None:
        mask = pc.and_(mask, pc.less(table["timestamp"], pa.scalar(hi, table.schema.field("timestamp").type)))
    table = table.filter(mask).sort_by("seq")
    keys: list[Key] = list(zip(table["seq"].to_pylist(), table["producer"].to_pylist(), table["pseq"].to_pylist()))
    late = late_records(keys)  # rows in read order, as read() gives them (docs/FORMAT.md, "Read order")
    return table.take(list(reorder(range(len(keys)), keys.__getitem__, late))) if late else table


def verify(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
           show_progress: bool = False) -> tuple[int, list[Problem]]:
    """Verify every journal under ``paths`` (internal logs included).

    Args:
        paths: one path (``str`` or ``Path``) or several: journal files, or
            directories (a data root or a directory below one).
        show_progress: draw a progress line on stderr when it is a terminal.

    Returns:
        (files checked, problems: the first problem of each bad file, plus
        files set aside as damaged).

    Raises:
        NotARecording: a path does not exist, or a directory holds no journals.
    """
    paths = _paths(paths)
    for p in paths:
        if not p.is_file():
            check_recording(p)
    files = journal_files(paths, internal=True)
    problems: list[Problem] = []
    for p in paths:
        if p.is_dir():
            problems += [Problem(str(d), -1, -1, "file was set aside as damaged by the recorder", "whole file")
                         for d in sorted(p.rglob("*.jsonl.damaged-*"))]
    total = sum(f.stat().st_size for f in files)
    progress = Progress(total, "verify", enabled=show_progress)
    for f in files:
        problem = verify_file(f, progress)
        if problem:
            problems.append(problem)
    progress.done()
    # manifests, links across segments, Parquet digests, catalog
    problems += [q for p in map(str, paths) if os.path.isdir(p) for q in check_segments(p)
                 if all(q.path != o.path for o in problems)]
    return len(files), problems
