"""Several producer processes against one supervised recorder: ordering and fork safety."""

from __future__ import annotations

from pathlib import Path

from .service_support import Procs, assert_verify_cli, check_exactly_once, temp_files


def test_three_producers_every_record_once_in_order(procs: Procs, data_root: Path) -> None:
    """Three producer processes x 500 records each land on disk exactly once, in each producer's order."""
    procs.supervisor(data_root)
    producers = [procs.producer(data_root, 500, user=f"user{i:02d}", session="sess01", audit_every=50)
                 for i in range(3)]
    results = [p.result(timeout=60) for p in producers]
    for r in results:
        assert r["error"] is None and r["rejected"] == [], r
        assert r["sent"] == 500 + 10 and r["acked"] == r["sent"], r
    disk = check_exactly_once(data_root, results)
    assert sorted(len(disk[r["producer"]]) for r in results) == [510, 510, 510]
    assert len({r["producer"] for r in results}) == 3
    assert_verify_cli(data_root)
    assert temp_files(data_root) == []


def test_forked_child_is_a_new_producer(procs: Procs, data_root: Path) -> None:
    """A Client used before os.fork() keeps working in the parent and the child, as two producers, nothing dropped."""
    procs.supervisor(data_root)
    p = procs.producer(data_root, 100, fork=True)
    p.result(timeout=60)
    found = {r["role"]: r for r in p.json_lines()}
    assert set(found) == {"child", "parent"}, p.out
    child, parent = found["child"], found["parent"]
    assert parent["child_status"] == 0
    assert child["producer"] != parent["producer"]
    assert child["parent_producer"] == parent["producer"]
    for r in (child, parent):
        assert r["error"] is None and r["rejected"] == [], r
    assert child["sent"] == child["acked"] == 100  # a fresh sequence from 1
    assert parent["sent"] == parent["acked"] == 200
    disk = check_exactly_once(data_root, [child, parent])
    assert disk[child["producer"]] == list(range(1, 101))
    assert disk[parent["producer"]] == list(range(1, 201))
