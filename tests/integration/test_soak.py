"""The crash soak, short: ``python -m benchmarks soak`` with a few kills, checked by its own checker.

The full soak (``python -m benchmarks soak --kills 200``) is a documented
command; this runs the same orchestration with 4 kills and 4 producers
(rotation and Parquet sealing included), then runs ``benchmarks.soak.check``
again in this process on the data root and histories it kept. The seed of
the kill delays comes from ``RECORDER_TEST_SEED`` or the clock, and is
named in every failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from .service_support import Procs

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not installed
    sys.path.insert(0, str(REPO))

from benchmarks import soak  # noqa: E402

KILLS = 4
PRODUCERS = 4


@pytest.mark.timeout(180)
def test_short_soak_loses_and_duplicates_no_acknowledged_record(procs: Procs, tmp_path: Path) -> None:
    """Four random SIGKILLs of a supervised recorder under four producers lose, duplicate and reorder nothing acknowledged, and everything verifies."""
    seed = int(os.environ.get("RECORDER_TEST_SEED", time.time_ns() % 2**32))
    out = tmp_path / "soak.json"
    p = procs.spawn("soak", ["-m", "benchmarks", "soak", "--kills", str(KILLS), "--producers", str(PRODUCERS),
                             "--rotate-message", "200", "--rotate-action", "50", "--seed", str(seed),
                             "--dir", str(tmp_path), "--keep", "--out", str(out)],
                    env={"PYTHONPATH": str(REPO)})
    rc = p.wait(timeout=150)
    assert out.exists(), f"seed {seed}: the soak wrote no results\n{p.describe()}"
    result = json.loads(out.read_text(encoding="utf-8"))
    summary = f"seed {seed}\n{soak.summary(result)}\n{p.describe()}"
    work = Path(result["work_dir"])
    data = work / "data"

    # The same checker, run here on what the soak left behind.
    histories = soak.load_histories(sorted(work.glob("history-*.json")))
    assert len(histories) == PRODUCERS, summary
    report = soak.check(data, histories)
    assert report.violations == [], summary + "\n" + "\n".join(report.violations)

    assert result["violations"] == [] and rc == 0, summary
    assert result["kills_survived"] == KILLS, summary
    assert len({k["new_pid"] for k in result["kills"]} | {result["kills"][0]["pid"]}) == KILLS + 1, summary
    records = result["records"]
    assert records["lost"] == 0 and records["duplicates"] == 0 and records["unknown"] == 0, summary
    assert records["acked"] > 1000 and records["rejected"] > 0, summary
    assert records["stored"] == records["acked"], summary
    # The run exercised rotation and Parquet sealing, not just one open file per type.
    assert list(data.rglob("raw_action_*.parquet")), summary
    assert len(list(data.rglob("a3cp_message_*.jsonl"))) > PRODUCERS, summary
