"""JSONL: the journal is the data file; a sealed segment stays as it was written.

One line per record, after a header line; each line is a JSON object (the
envelope, the record, and the chain's fields). docs/FORMAT.md has the
framing; ``storage.journal`` writes and recovers it, and the read side reads
journals line by line itself (commit marks, torn and damaged lines), so
:func:`rows`, :func:`count`, :func:`first_seq` and :func:`inspect` here only
give a whole journal's record lines. Its Arrow table is Parquet's layout, so
:func:`table` loads pyarrow: the package imports it only when a table is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from typing import Any

import msgspec

from ...exceptions import UsageError
from . import Encoded, Source, record_lines

__all__ = ["count", "encode", "first_seq", "inspect", "read", "rows", "table"]


def encode(lines: Sequence[bytes], model_for: Callable[[str], Any]) -> Encoded | None:
    """Nothing to convert: the sealed journal is this format's data file."""
    return None


def table(data: bytes, model_for: Callable[[str], Any]) -> Any:
    """A sealed journal's records as an Arrow table (``parquet.to_table``'s columns)."""
    from .parquet import to_table

    return to_table(record_lines(data), model_for)


def read(source: Source, columns: Sequence[str] | None = None, after_seq: int | None = None) -> Any:
    """Refused: a journal's table needs its types' models (:func:`table`)."""
    raise UsageError("format", "a journal becomes a table through its models (Format.table), not read()")


def _lines(source: Source) -> list[bytes]:
    if isinstance(source, (str, PathLike)):
        with open(source, "rb") as f:
            return record_lines(f.read())
    return record_lines(source.read())


def rows(source: Source, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
    """Every record line of a whole journal, decoded (the envelope as written)."""
    for line in _lines(source):
        yield msgspec.json.decode(line)


def count(source: Source) -> int:
    """The record lines of a journal."""
    return len(_lines(source))


def first_seq(source: Source) -> int | None:
    """The ``seq`` of a journal's first record line; None if it has none."""
    lines = _lines(source)
    return int(msgspec.json.decode(lines[0])["seq"]) if lines else None


def inspect(source: Source) -> tuple[int | None, str, str]:
    """(record lines or None, the place, why it is unreadable)."""
    try:
        return count(source), "whole file", ""
    except OSError as e:
        return None, "whole file", str(e)
