"""Shared fixtures: a fresh data root and a store over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder import Store

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "a3cp-corpus"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(None, data_root=tmp_path / "data")
    yield s
    s.close()
