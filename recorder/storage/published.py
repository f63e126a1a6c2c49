"""What is published: the read-only view of the publication state that retention needs.

The recorder keeps a sealed segment of a publishing type until every table
of it holds it (``unpublished_check``); the publisher (``recorder.publish``)
writes the state file this reads. Nothing here imports deltalake.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..schema.config import Config
from . import INTERNAL_DIR, formats

__all__ = ["STATE", "data_bytes", "load_state", "publish_types", "published", "table_name", "tables_of",
           "unpublished_check"]

#: the publication state file under ``_recorder/``: per table, the highest catalog number published
STATE = "publish.json"


def table_name(schema_type: str, major: int) -> str:
    """The Delta table of one type and MAJOR: ``raw_action`` for MAJOR 1, ``raw_action_v2`` for 2."""
    return schema_type if major == 1 else f"{schema_type}_v{major}"


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 1


def tables_of(manifest: dict[str, Any]) -> list[str]:
    """The tables a sealed segment publishes into (one per MAJOR version it holds), sorted."""
    majors = {_major(v) for v in manifest.get("versions") or {"1": 0}}
    return sorted(table_name(str(manifest["schema_type"]), m) for m in majors)


def publish_types(config: Config) -> set[str]:
    """The schema types that publish: ``[publish] types``, else every parquet-format type."""
    p = config.publish
    if p is None:
        return set()
    return set(p.types) if p.types else {n for n, t in config.types.items() if formats.get(t.format).converts}


def load_state(root: str) -> dict[str, Any]:
    """The publication state of ``root`` (an empty one if there is none, or it is unreadable)."""
    try:
        doc = msgspec.json.decode((Path(root) / INTERNAL_DIR / STATE).read_bytes())
    except (FileNotFoundError, msgspec.DecodeError):
        return {"tables": {}}
    return doc if isinstance(doc, dict) and isinstance(doc.get("tables"), dict) else {"tables": {}}


def published(manifest: dict[str, Any], tables: dict[str, Any]) -> bool:
    """True if every table of ``manifest`` holds it, per the state's ``tables``."""
    n = int(manifest.get("number") or 0)
    return all(int(tables.get(t, 0)) >= n for t in tables_of(manifest))


def data_bytes(manifest: dict[str, Any]) -> int:
    """Bytes a sealed segment uses on disk (its Parquet file once converted, else its journal)."""
    return int(formats.converted(manifest).get("bytes") or manifest.get("bytes") or 0)


def unpublished_check(root: str, config: Config) -> Callable[[dict[str, Any]], bool]:
    """A predicate for retention and ``delete_oldest``: True for a sealed segment that must be kept.

    A segment of a publishing type is kept until the publication state says
    every table of it holds it. The state file is read at most once a second.
    """
    types = publish_types(config)
    cache: list[Any] = [0.0, {}]

    def keep(manifest: dict[str, Any]) -> bool:
        if manifest.get("schema_type") not in types:
            return False
        now = time.monotonic()
        if now - cache[0] > 1.0:
            cache[0], cache[1] = now, load_state(root).get("tables", {})
        return not published(manifest, cache[1])

    return keep
