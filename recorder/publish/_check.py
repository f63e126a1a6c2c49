"""``recorder publish --check``: compare each table with the local catalog.

Every sealed segment this recorder published must be in its table once:
the same number of rows (per MAJOR), no ``seq`` twice, the commit carrying
the manifest's chain head; and the table holds no rows of this recorder
that the catalog does not know.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..schema.config import Config
from ..exceptions import PublishError
from ._lake import Lake, storage_options
from ._publisher import app_id
from ._state import catalog_segments, load_state, publish_types, published, recorder_id, table_name

__all__ = ["Report", "check"]


@dataclass
class Report:
    """What ``check`` compared, and what did not match."""

    tables: int = 0
    segments: int = 0
    rows: int = 0
    waiting: int = 0  # sealed segments not published yet (not a problem: publication may lag)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the counts compared and how many problems."""
        return (f"publish --check: {self.segments} published segments ({self.rows} rows) in {self.tables} tables "
                f"compared with the catalog, {self.waiting} waiting: {len(self.problems)} problems")


def _expected(m: dict[str, Any]) -> Counter[str]:
    """Rows per table of one manifest (its versions' counts, by MAJOR)."""
    rows: Counter[str] = Counter()
    for version, n in (m.get("versions") or {}).items():
        head = str(version).split(".", 1)[0]
        rows[table_name(str(m["schema_type"]), int(head) if head.isdigit() else 1)] += int(n)
    return rows


def check(root: str, config: Config) -> Report:
    """Compare the tables with the local catalog of ``root``.

    Raises:
        PublishError: no ``[publish]`` table, or the store cannot be read.
    """
    p = config.publish
    if p is None:
        raise PublishError(config.source, "no [publish] table in the config")
    rid = recorder_id(root, p)
    lake = Lake(p.table_root, storage_options(p))
    types = publish_types(config)
    state_tables = load_state(root).get("tables", {})
    report = Report()
    expect: dict[str, dict[int, tuple[int, dict[str, Any]]]] = {}
    for m in catalog_segments(root, include_deleted=True):
        if m.get("schema_type") not in types or not m.get("number"):
            continue
        for table, n in _expected(m).items():
            expect.setdefault(table, {})[int(m["number"])] = (n, m)
    for table in sorted(set(expect) | {t for t in lake.tables() if t.split("_v")[0] in types}):
        want = expect.get(table, {})
        rows = lake.rows(table, rid)
        if rows is None:
            waiting = [num for num, (_n, m) in want.items() if not published(m, state_tables)]
            report.waiting += len(waiting)
            if len(waiting) < len(want):
                report.problems.append(f"{table}: no such table, but the state says segments were published")
            continue
        report.tables += 1
        dt = lake.open(table)
        version = lake.txn_version(dt, app_id(rid, table))
        commits = lake.commits_of(dt, app_id(rid, table), limit=100_000) if dt is not None else {}
        segs = Counter(rows.column("segment").to_pylist())
        seqs = Counter(rows.column("seq").to_pylist())
        dup = sum(n - 1 for n in seqs.values() if n > 1)
        if dup:
            report.problems.append(f"{table}: {dup} rows of recorder {rid} appear more than once (by seq)")
        for number, (n, m) in sorted(want.items()):
            if number > version:
                report.waiting += 1
                if segs.get(number):
                    report.problems.append(f"{table}: segment {number} has rows but no transaction version")
                continue
            report.segments += 1
            report.rows += segs.get(number, 0)
            if segs.get(number, 0) != n:
                report.problems.append(f"{table}: segment {number} ({m['path']}): {segs.get(number, 0)} rows "
                                       f"in the table, {n} in the manifest")
            c = (commits.get(number) or {}).get("recorder.manifest") or {}
            if c and c.get("chain_head") != m.get("chain_head"):
                report.problems.append(f"{table}: segment {number}: the commit's chain head differs from the "
                                       "manifest's")
        for number in sorted(set(segs) - set(want)):
            report.problems.append(f"{table}: {segs[number]} rows of segment {number}, which the catalog "
                                   "does not hold")
    return report
