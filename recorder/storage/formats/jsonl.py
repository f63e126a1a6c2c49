"""JSONL: the journal is the data file; a sealed segment stays as it was written.

One line per record, after a header line; each line is a JSON object (the
envelope, the record, and the chain's fields). docs/FORMAT.md has the
framing; ``storage.journal`` writes and recovers it. Its Arrow table is
Parquet's layout, so importing this module loads pyarrow: the package
imports it only when a table is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import Encoded, record_lines
from .parquet import to_table

__all__ = ["encode", "table"]


def encode(lines: Sequence[bytes], model_for: Callable[[str], Any]) -> Encoded | None:
    """Nothing to convert: the sealed journal is this format's data file."""
    return None


def table(data: bytes, model_for: Callable[[str], Any]) -> Any:
    """A sealed journal's records as an Arrow table (``parquet.to_table``'s columns)."""
    return to_table(record_lines(data), model_for)
