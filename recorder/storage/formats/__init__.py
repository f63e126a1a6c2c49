"""The formats a sealed segment can take: one module each, behind one surface.

Every segment is first written as a JSONL journal (``JOURNAL_SUFFIX``: the
chain, recovery and de-duplication work on it). A type's ``format`` names a
module of this package, ``formats/<format>.py``; a format other than the
journal's converts each sealed journal into its own data file,
``<stem>.<format>``, which the manifest then describes under the format's
name (``path``, ``sha256``, ``rows``, ``bytes``). Adding a format adds its
module (and its name to ``schema.config.Format``), nothing else.

A format module gives

- ``encode(lines, model_for) -> Encoded | None``: the data file of a sealed
  journal's record lines, or None when the journal is the data file;
- ``table(data, model_for)``: the records of a sealed segment's data file
  (its bytes) as an Arrow table;
- for the read side, on a data file (its path, or the file opened binary):
  ``read(source, columns, after_seq)`` (an Arrow table of some columns, the
  rows after a ``seq``), ``rows(source, batch_size)`` (each record as the
  envelope its journal line held), ``count(source)``, ``first_seq(source)``
  and ``inspect(source)`` (rows, where, why unreadable). The readers read a
  journal line by line themselves (commit marks, damaged lines); these
  serve the files a format ``converts`` to.

All are pure: the sealer writes the file durably. The module is imported
on first use, so a recorder without Parquet types never loads pyarrow.
``names()`` lists the formats (the modules of this package) and
``DATA_SUFFIXES`` their files' endings, so a directory's data files are
found without naming any format.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import PurePath
from types import ModuleType
from typing import Any, BinaryIO, Protocol

from ...exceptions import UsageError
from ...schema.registry import JOURNAL_FORMAT

__all__ = ["DATA_SUFFIXES", "JOURNAL_SUFFIX", "Encoded", "Format", "Source", "concat", "converted", "data_path",
           "empty_table", "for_path", "get", "journal_path", "names", "of", "record_lines", "stem", "to_table"]

#: The ending of every journal, whatever its type's format.
JOURNAL_SUFFIX = "." + JOURNAL_FORMAT

#: A data file to read: its path, or the file opened for reading (binary).
Source = str | PathLike[str] | BinaryIO


def names() -> tuple[str, ...]:
    """Every format: the journal's, then each format module of this package (``formats/<name>.py``) by name."""
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return (JOURNAL_FORMAT, *(n for n in found if n != JOURNAL_FORMAT))


#: The endings of every format's data files (the journal's first): what a directory's data files end with.
DATA_SUFFIXES = tuple("." + n for n in names())


class Encoded(Protocol):
    """A data file ready to be written: its row count, and the writer of its bytes."""

    @property
    def rows(self) -> int: ...

    def write(self, f: BinaryIO) -> str:
        """Write the file's bytes to ``f`` (which only appends); returns their hex sha256."""
        ...


@dataclass(frozen=True)
class Format:
    """One on-disk format, by name; its module (``formats/<name>.py``) does the encoding."""

    name: str

    @property
    def suffix(self) -> str:
        """The ending of this format's data files (and of its types' path templates)."""
        return "." + self.name

    @property
    def converts(self) -> bool:
        """True if a sealed journal becomes another data file (False: the journal is the data)."""
        return self.suffix != JOURNAL_SUFFIX

    def data_name(self, stem: str) -> str:
        """The data file of the segment ``stem`` once sealed (and converted)."""
        return stem + self.suffix

    def pending(self, manifest: dict[str, Any]) -> bool:
        """True while a sealed segment of this format still waits for its data file."""
        return self.converts and manifest.get("state") != "converted"

    def encode(self, lines: Sequence[bytes], model_for: Callable[[str], Any]) -> Encoded | None:
        """The data file of a sealed journal's record lines; None when the journal is the data file.

        Raises:
            ValidationError: a line the format cannot hold.
        """
        encoded: Encoded | None = _module(self.name).encode(lines, model_for)
        return encoded

    def table(self, data: bytes, model_for: Callable[[str], Any]) -> Any:
        """The records of a sealed segment's data file of this format (its bytes) as a ``pyarrow.Table``.

        Raises:
            ValidationError: a record the table cannot hold.
        """
        return _module(self.name).table(data, model_for)

    def read(self, source: Source, columns: Sequence[str] | None = None, after_seq: int | None = None) -> Any:
        """A data file's records as a ``pyarrow.Table``: only ``columns`` (None: all), only the rows whose
        ``seq`` is above ``after_seq`` (None: all); a format reads no more of the file than that needs.

        Raises:
            UsageError: the journal format (its table needs the models: :meth:`table`).
        """
        return _module(self.name).read(source, columns, after_seq)

    def rows(self, source: Source, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every record of a data file as the envelope its journal line held, in file order; read
        ``batch_size`` records at a time (None: the whole file at once)."""
        rows: Iterator[dict[str, Any]] = _module(self.name).rows(source, batch_size)
        return rows

    def count(self, source: Source) -> int:
        """The records of a data file (a converted file's footer says it)."""
        return int(_module(self.name).count(source))

    def first_seq(self, source: Source) -> int | None:
        """The ``seq`` of a data file's first record; None if it holds none."""
        seq: int | None = _module(self.name).first_seq(source)
        return seq

    def inspect(self, source: Source) -> tuple[int | None, str, str]:
        """(records, or None if the file is unreadable; the place in the file; why it is unreadable)."""
        found: tuple[int | None, str, str] = _module(self.name).inspect(source)
        return found


_MODULES: dict[str, ModuleType] = {}


def _module(name: str) -> ModuleType:
    """The module of format ``name``: a plugin found by its file name, imported once."""
    mod = _MODULES.get(name)
    if mod is None:
        if not name.isidentifier() or name.startswith("_"):
            raise UsageError("format", f"{name!r} is not a format name")
        try:
            mod = _MODULES[name] = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            raise UsageError("format", f"unknown format {name!r}") from e
    return mod


def to_table(envelopes: Sequence[bytes | dict[str, Any]], model_for: Callable[[str], Any]) -> Any:
    """Record lines (or their decoded envelopes) of one type as a ``pyarrow.Table`` in the layout every
    format reads into (``formats/parquet.py`` describes it)."""
    return _module("parquet").to_table(envelopes, model_for)


def concat(tables: Sequence[Any]) -> Any:
    """Tables of one type (files, journals) as one, under their unified schema (``parquet.concat``)."""
    return _module("parquet").concat(tables)


def empty_table(model: Any) -> Any:
    """A table of no records of ``model`` (a pydantic model class), with its columns (built from no
    batches: ``Schema.empty_table`` cannot build extension types inside a struct)."""
    import pyarrow as pa

    return pa.Table.from_batches([], schema=_module("parquet").envelope_schema(model))


def get(name: str) -> Format:
    """The format called ``name`` (a type's ``format``, or a manifest's)."""
    return Format(name)


def for_path(path: str | PurePath) -> Format:
    """The format of a data file, by its ending (a journal's is the journal format)."""
    return Format(PurePath(path).suffix[1:] or JOURNAL_FORMAT)


def of(manifest: dict[str, Any]) -> Format:
    """The format a sealed segment was sealed in (its manifest's ``format``)."""
    return Format(str(manifest.get("format") or JOURNAL_FORMAT))


def converted(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's entry for the converted data file (path, sha256, rows, bytes); {} if none."""
    fmt = of(manifest)
    entry = manifest.get(fmt.name) if fmt.converts else None
    return entry if isinstance(entry, dict) else {}


def data_path(manifest: dict[str, Any]) -> str:
    """The file that holds a sealed segment's records: its converted file, else its journal."""
    return str(converted(manifest).get("path", manifest["path"]))


def stem(path: str) -> str:
    """``a/b/x_001.jsonl`` -> ``a/b/x_001``: the name every file of a segment shares."""
    return path[: -len(JOURNAL_SUFFIX)] if path.endswith(JOURNAL_SUFFIX) else path.rsplit(".", 1)[0]


def journal_path(path: str) -> str:
    """The journal a data path starts as: ``x_001.parquet`` -> ``x_001.jsonl``."""
    return path if path.endswith(JOURNAL_SUFFIX) else stem(path) + JOURNAL_SUFFIX


def record_lines(data: bytes) -> list[bytes]:
    """The record lines of a journal's bytes (what every format encodes): each non-empty line after the header."""
    return [line for line in data.split(b"\n")[1:] if line]
