"""The durable index: merged pseq intervals per producer, checked against a plain set."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.storage.dedup import DurableIndex


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 200), max_size=300))
def test_intervals_cover_exactly_the_pseqs_added_in_any_order(pseqs: list[int]) -> None:
    idx = DurableIndex()
    for p in pseqs:
        idx.add("p1", p)
    iv = idx.of("p1")
    assert all(a <= b for a, b in iv)
    assert all(iv[i][1] + 1 < iv[i + 1][0] for i in range(len(iv) - 1)), "intervals overlap or touch"
    assert {p for p in range(0, 202) if DurableIndex.covers(iv, p)} == set(pseqs)


def test_a_checkpoint_round_trips_and_bounds_hold(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        idx = DurableIndex()
        for p in [1, 2, 3, 5, 7, 8]:
            idx.add("p1", p)
        idx.add("p2", 10)
        idx.save(fd, 42)
        back = DurableIndex.load(fd)
        assert back.loaded and back.upto == 42
        assert back.of("p1") == [[1, 3], [5, 5], [7, 8]] and back.of("p2") == [[10, 10]]
        back.seen["p2"] = 0.0  # not heard of for decades: dropped at the next checkpoint
        back.save(fd, 43)
        assert DurableIndex.load(fd).of("p2") == []
    finally:
        os.close(fd)


def test_no_checkpoint_and_a_damaged_one_load_as_empty(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not DurableIndex.load(fd).loaded
        (tmp_path / "producers.json").write_text("{not json")
        idx = DurableIndex.load(fd)
        assert not idx.loaded and idx.upto == 0 and idx.intervals == {}
    finally:
        os.close(fd)
