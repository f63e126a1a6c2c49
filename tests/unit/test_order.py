"""The read order: each producer's records by pseq, seq for the rest; read, replay, read_table and export agree."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder import Store, read, replay
from recorder.reading._order import Key, late_records, permutation, reorder
from recorder.cli import main
from recorder.reading.reader import read_table
from recorder.testing import sample_audit, sample_message, sample_raw_action


def brute_force(keys: list[Key]) -> list[int]:
    """The rule as written in docs/FORMAT.md: sort by (K, pseq), K the highest seq of a lower-or-equal pseq."""
    def ordered(k: Key) -> bool:
        return isinstance(k[1], str) and type(k[2]) is int and k[2] > 0

    def release(k: Key) -> int:
        if not ordered(k):
            return k[0]
        return max([k[0]] + [q[0] for q in keys if ordered(q) and q[1] == k[1] and q[2] < k[2]])

    return sorted(range(len(keys)), key=lambda i: (release(keys[i]), keys[i][2] if ordered(keys[i]) else 0, i))


records = st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3", "inproc", None]), st.integers(0, 12)),
                   max_size=40)


@settings(max_examples=400, deadline=None)
@given(records, st.integers(1, 3))
def test_permutation_is_the_rule(recs: list[tuple[Any, int]], gap: int) -> None:
    """The streaming merge gives exactly the order the rule defines, for any pseqs (duplicates and 0 included)."""
    keys: list[Key] = [(1000 + i * gap, p, q if p is not None else None) for i, (p, q) in enumerate(recs)]
    got = permutation(keys)
    assert got == brute_force(keys)
    by_producer: dict[Any, list[int]] = defaultdict(list)
    for i in got:
        seq, producer, pseq = keys[i]
        if producer is not None and pseq:
            by_producer[producer].append(pseq)
    assert all(s == sorted(s) for s in by_producer.values())


def test_records_without_producer_order_stay_at_their_seq() -> None:
    """In-process records (pseq 0) are never held, and a producer's late record releases only its own."""
    keys: list[Key] = [(1, "p", 1), (2, "inproc", 0), (3, "p", 4), (4, "inproc", 0), (5, "q", 1),
                       (6, "p", 2), (7, "p", 3), (8, "inproc", 0)]
    assert [keys[i] for i in permutation(keys)] == [(1, "p", 1), (2, "inproc", 0), (4, "inproc", 0), (5, "q", 1),
                                                    (6, "p", 2), (7, "p", 3), (3, "p", 4), (8, "inproc", 0)]
    assert late_records(keys) == {"p": [(6, 2), (7, 3)]}


def test_a_held_record_leaves_when_its_late_record_never_comes() -> None:
    """A record held for a late record that the merge never sees (a file changed) still comes, once, in order."""
    keys: list[Key] = [(1, "p", 1), (3, "p", 4), (5, "q", 1), (7, "q", 2)]
    late = {"p": [(6, 2)]}  # found by the light pass, gone before the merge read it
    assert list(reorder(keys, lambda k: k, late)) == [(1, "p", 1), (5, "q", 1), (3, "p", 4), (7, "q", 2)]
    assert list(reorder(keys[:2], lambda k: k, late)) == keys[:2]


def fabricate(root: Path, *, end: bool = False) -> None:
    """A recording where producer P's #3 was stored after its #4 (as a resend after a crash leaves it).

    Seq order: P1 audit, P2 raw_action, Q1 a3cp, inproc audit, P4 audit, Q2 audit, P3 raw_action, Q3 a3cp.
    """
    with Store(None, data_root=root) as s:
        s.record(sample_audit("u1", "s1", i=1), schema_type="audit_event", producer="P", pseq=1)
        s.record(sample_raw_action("u1", "s1", 2), schema_type="raw_action", producer="P", pseq=2)
        s.record(sample_message("u1", "s1", 1), schema_type="a3cp_message", producer="Q", pseq=1)
        s.record(sample_audit("u1", "s1", i=9), schema_type="audit_event")
        s.record(sample_audit("u1", "s1", i=4), schema_type="audit_event", producer="P", pseq=4)
        s.record(sample_audit("u1", "s1", i=2), schema_type="audit_event", producer="Q", pseq=2)
        s.record(sample_raw_action("u1", "s1", 3), schema_type="raw_action", producer="P", pseq=3)
        s.record(sample_message("u1", "s1", 3), schema_type="a3cp_message", producer="Q", pseq=3)
        if end:
            assert s.end_session("u1", "s1") >= 1
            s.sealer.wait_idle(60)


EXPECTED = [("P", 1), ("P", 2), ("Q", 1), ("inproc", 0), ("Q", 2), ("P", 3), ("P", 4), ("Q", 3)]


@pytest.mark.parametrize("sealed", [False, True], ids=["journals", "parquet"])
def test_read_and_replay_give_each_producer_in_pseq_order(tmp_path: Path, sealed: bool) -> None:
    """A fabricated inversion across types reads back in each producer's order, from journals and from Parquet."""
    root = tmp_path / "d"
    fabricate(root, end=sealed)
    assert bool(list(root.rglob("*.parquet"))) == sealed
    by_seq = sorted(read(root), key=lambda e: e["seq"])
    assert [(e["producer"], e["pseq"]) for e in by_seq][4:7] == [("P", 4), ("Q", 2), ("P", 3)]  # the inversion
    got = list(read(root))
    assert [(e["producer"], e["pseq"]) for e in got] == EXPECTED
    assert list(replay(root, speed=None)) == got
    assert [e["pseq"] for e in read(root, user_id="u1", session_id="s1") if e["producer"] == "P"] == [1, 2, 3, 4]


def test_filtered_reads_keep_each_producer_in_order(tmp_path: Path) -> None:
    """A read of some types applies the rule to what it yields: P's late #3 still releases its #4."""
    root = tmp_path / "d"
    fabricate(root)
    got = [(e["producer"], e["pseq"]) for e in read(root, schema_type="audit_event")]
    assert got == [("P", 1), ("inproc", 0), ("P", 4), ("Q", 2)]  # no late record among these: seq order
    both = [(e["producer"], e["pseq"]) for e in replay(root, types=["audit_event", "raw_action"], speed=None)]
    assert both == [("P", 1), ("P", 2), ("inproc", 0), ("Q", 2), ("P", 3), ("P", 4)]


def test_read_table_and_export_agree_with_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """read_table and both export formats give one type's rows in read order, across that type's files."""
    root = tmp_path / "d"
    with Store(None, data_root=root) as s:  # P's #2 (session s2) stored after its #3 (session s1)
        s.record(sample_message("u1", "s1", 1), schema_type="a3cp_message", producer="P", pseq=1)
        s.record(sample_message("u1", "s1", 3), schema_type="a3cp_message", producer="P", pseq=3)
        s.record(sample_message("u1", "s2", 5), schema_type="a3cp_message", producer="Q", pseq=1)
        s.record(sample_message("u1", "s2", 2), schema_type="a3cp_message", producer="P", pseq=2)
    want = [("P", 1), ("Q", 1), ("P", 2), ("P", 3)]
    assert [(e["producer"], e["pseq"]) for e in read(root)] == want
    table = read_table(root, "a3cp_message")
    assert list(zip(table["producer"].to_pylist(), table["pseq"].to_pylist())) == want
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"out.{fmt}"
        assert main(["export", str(root), "--type", "a3cp_message", "--format", fmt, "--out", str(out)]) == 0
        if fmt == "jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            got = [(r["producer"], r["pseq"]) for r in rows]
        else:
            t = pq.read_table(out)
            got = list(zip(t["producer"].to_pylist(), t["pseq"].to_pylist()))
        assert got == want, fmt
    assert main(["read", str(root)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(e["producer"], e["pseq"]) for e in printed] == want
