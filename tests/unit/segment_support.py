"""Helpers of the segment tests: a config with a JSONL and a Parquet type that rotate, and readers of what they wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recorder import read, verify

SESSION = Path("logs/elias01/sess_demo")
MSG = """
[types.msg]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{user_id}/{session_id}/msg_{segment:04d}.jsonl"
%s

[types.msg.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"
"""
PQ = """
[types.pq]
model = "recorder.a3cp:A3CPMessage"
format = "parquet"
path = "logs/{user_id}/{session_id}/pq_{segment:04d}.parquet"
%s

[types.pq.models]
"1.1" = "recorder.a3cp:A3CPMessageV1_1"
"""


def write_config(directory: Path, msg: str = "rotate_records = 3", pq_: str = "rotate_records = 3",
                 recorder: str = "") -> Path:
    """A config with a jsonl type ``msg`` and a parquet type ``pq``, each with ``{segment:04d}`` in its file name."""
    path = directory / "recorder.toml"
    settings = recorder if "min_free_bytes" in recorder else "min_free_bytes = 0\n" + recorder
    path.write_text(f"[recorder]\n{settings}\n" + MSG % msg + PQ % pq_)
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_bytes().splitlines()]


def manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_bytes()))


def manifests(directory: Path, prefix: str) -> list[dict[str, Any]]:
    return [manifest(p) for p in sorted(directory.glob(f"{prefix}_*.manifest.json"))]


def pseqs(root: Path, schema_type: str) -> list[int]:
    return [e["pseq"] for e in read(root, schema_type=schema_type)]


def read_verify(root: Path) -> list[str]:
    """recorder.verify's problems (journals and segments) as text."""
    return [str(p) for p in verify([root])[1]]


def catalog_state(root: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """The catalog folded as the Catalog applies it: path -> ('live' | 'deleted', latest manifest)."""
    state: dict[str, tuple[str, dict[str, Any]]] = {}
    for e in lines_of(root / "_recorder" / "catalog.jsonl")[1:]:
        m = e["manifest"]
        state[m["path"]] = ("deleted" if e["op"] == "delete" else "live", m)
    return state

