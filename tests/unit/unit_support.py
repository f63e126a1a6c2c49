"""Small helpers shared by the unit tests (plain functions, no fixtures)."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import CORPUS


def scaled(n: int) -> int:
    """Hypothesis examples for a damage test: ``n`` in the default run, times
    RECORDER_EXAMPLES_SCALE for the long runs docs/RELIABILITY.md describes."""
    return max(1, int(n * float(os.environ.get("RECORDER_EXAMPLES_SCALE", "1"))))


def corpus_bytes(module: str, which: str) -> bytes:
    """The bytes of the upstream example ``tests/data/a3cp/<module>/<which>.json``."""
    path: Path = CORPUS / module / f"{which}.json"
    return path.read_bytes()


def journal_path(root: Path, schema_type: str = "a3cp_message", user: str = "elias01",
                 session: str = "sess_demo") -> Path:
    """Where the shipped config puts a session's journal of ``schema_type``."""
    return root / "logs" / "users" / user / "sessions" / session / f"{schema_type}.jsonl"


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a journal (header included), parsed."""
    return [json.loads(ln) for ln in path.read_bytes().splitlines()]


def quarantine(root: Path) -> list[dict[str, Any]]:
    """The quarantine log's entries (header left out)."""
    return lines(root / "_recorder" / "quarantine.jsonl")[1:]


def audit_events(root: Path) -> list[dict[str, Any]]:
    """The recorder's own audit log entries (header left out)."""
    return lines(root / "_recorder" / "audit.jsonl")[1:]


def all_bytes(root: Path) -> bytes:
    """The bytes of every regular file under ``root``, concatenated (for grepping the whole tree)."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                out.append(p.read_bytes())
    return b"\n".join(out)


def line_starts(data: bytes) -> list[int]:
    """Byte offset at which each line of ``data`` starts."""
    starts = [0]
    starts += [i + 1 for i, b in enumerate(data) if b == 0x0A and i + 1 < len(data)]
    return starts


def write_parquet(dir_fd: int, name: str, table: Any, label: str) -> str:
    """Write an Arrow table as the Parquet file ``name`` in ``dir_fd`` the way the sealer does
    (temp file, fsync, rename, directory fsync); returns the file's sha256."""
    from recorder.storage import _durable
    from recorder.storage.formats import parquet

    digests: list[str] = []
    _durable.publish(dir_fd, name, lambda f: digests.append(parquet.write_to(f, table)), label)
    return digests[0]


_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def canon(value: Any) -> Any:
    """The value as the model sees it: the same keys and nulls at every depth; times as instants, UUIDs as values.

    Parquet keeps values, not their text (docs/FORMAT.md): ``.033Z`` comes
    back as ``.033000Z``, an upper-case UUID in lower case, ``30`` as ``30.0``.
    """
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canon(v) for v in value]
    if isinstance(value, str) and _TS.match(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, str) and _UUID.match(value):
        return uuid.UUID(value)
    return value
