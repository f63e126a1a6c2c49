"""Shared fixtures: a fresh data root and a store over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder import Store

# Example records of the upstream A3CP modules, copied byte for byte (see its NOTICE).
CORPUS = Path(__file__).resolve().parent / "data" / "a3cp"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(None, data_root=tmp_path / "data")
    yield s
    s.close()
