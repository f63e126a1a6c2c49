"""The compare report's limits table and stage profile, from made-up case results (no processes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not installed
    sys.path.insert(0, str(REPO))

from benchmarks._compare_report import limits_table, profile_table  # noqa: E402
from benchmarks.compare import _profile_delta  # noqa: E402


def _row(variant: str, rate: float, per_s: float, p99: float, cpu: float, all_cpu: float) -> dict[str, Any]:
    return {"variant": variant, "rate": rate, "rate_label": "5k/s" if rate else "unpaced", "throughput_per_s": per_s,
            "lat_p99_ms": p99, "writer_cpu_us_per_record": cpu, "cpu_us_per_record": all_cpu,
            "call_unblocked_p99_us": 12.0, "blocked_calls": 3, "blocked_ms": 40.0, "loadavg": [1.5, 1.0, 1.0]}


def test_limits_table_divides_the_recorder_by_the_reference_and_sqlite_100() -> None:
    """Per rate: records/s ÷ reference and ÷ SQLite-100; durable p99 ÷ reference only where paced."""
    rows = [_row("recorder", 5000.0, 5000.0, 3.0, 50.0, 90.0), _row("reference", 5000.0, 5000.0, 1.5, 20.0, 40.0),
            _row("recorder", 0.0, 30000.0, 900.0, 25.0, 40.0), _row("reference", 0.0, 60000.0, 90.0, 8.0, 14.0),
            _row("sqlite-100", 0.0, 20000.0, 80.0, 20.0, 20.0)]
    lines = limits_table(rows).splitlines()
    paced, unpaced = (ln.split(" | ") for ln in lines[2:])
    assert paced[3] == "1.00" and paced[8] == "2.00" and paced[4] == "–"
    assert unpaced[3] == "0.50" and unpaced[5] == "1.50" and unpaced[8] == "–"
    assert unpaced[14] == "3 (40.0)" and unpaced[15] == "1.50 |"
    assert limits_table([r for r in rows if r["variant"] != "recorder"]) == ""


def test_profile_is_differenced_and_shown_per_record() -> None:
    """The recorder's cumulative profile over the window, as µs per record by thread and stage."""
    before = {"profile": {"records": 100, "frames": 10, "threads_cpu_s": {"loop": 1.0}, "stages_s": {"decode": 0.5}}}
    after = {"profile": {"records": 1100, "frames": 110, "threads_cpu_s": {"loop": 1.01, "sync": 0.002},
                         "stages_s": {"decode": 0.503}}}
    prof = _profile_delta(before, after)
    assert prof == {"records": 1000, "frames": 100, "threads_cpu_s": {"loop": 0.01, "sync": 0.002},
                    "stages_s": {"decode": 0.003}}
    assert _profile_delta(before, {"pid": 1}) is None
    case = {"variant": "recorder", "rate": 0.0, "records": 1000, "writer": {"cpu_s": 0.02},
            "server_cpu": {"user_s": 0.015, "system_s": 0.005}, "profile": prof}
    table = profile_table([case])
    assert "| thread loop | 10.0 |" in table and "| stage decode | 3.00 |" in table
    assert "| records per frame | 10.0 |" in table and "not reported" not in table
    assert "| threads not profiled | 8.00 |" in table  # 20 µs of process CPU, 12 in the profiled threads
    bare = profile_table([case | {"profile": None}])
    assert "| recorder process: total | 20.0 |" in bare and "profile: not reported by this recorder" in bare
