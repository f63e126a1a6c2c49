"""``python -m benchmarks compare``, briefly: the reference variant end to end, and the config it refuses.

The full comparison is a documented command (docs/PERFORMANCE.md); these only
check that its reference variant (``benchmarks/_reference.py``) runs, stores
every record it acknowledged in a sha256 chain, and reports what it measured,
and that a config which is not the shipped fsync + sha256 is refused before
anything runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from .service_support import Procs

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not installed
    sys.path.insert(0, str(REPO))

from benchmarks import _reference  # noqa: E402


@pytest.mark.timeout(90)
def test_reference_variant_stores_and_reports_every_record(procs: Procs, tmp_path: Path) -> None:
    """One second of the unpaced reference variant: records > 0 acknowledged, each stored once in a valid chain."""
    out = tmp_path / "compare.json"
    p = procs.spawn("compare", ["-m", "benchmarks", "compare", "--quick", "--variants", "reference", "--rates",
                                "unpaced", "--seconds", "1", "--no-plot", "--keep", "--dir", str(tmp_path),
                                "--out", str(out)], env={"PYTHONPATH": str(REPO)}, cwd=REPO)
    rc = p.wait(timeout=80)
    assert rc == 0 and out.exists(), p.describe()
    payload = json.loads(out.read_text(encoding="utf-8"))
    (r,) = payload["results"]
    assert r["variant"] == "reference" and r["records"] > 0, p.describe()
    assert r["throughput_per_s"] > 0 and r["writer_cpu_us_per_record"] > 0 and r["cpu_us_per_record"] > 0
    assert r["lat_ms"]["p50"] > 0 and r["reference_stats"]["rejected"] == 0
    assert payload["settings"]["config_digest"].startswith("sha256:")
    assert (payload["settings"]["durability"], payload["settings"]["hash"]) == ("fsync", "sha256")

    (journal,) = tmp_path.glob(f"compare-reference-*/{_reference.JOURNAL}")
    lines = journal.read_bytes().splitlines()
    assert len(lines) == r["reference_stats"]["records"] >= r["records"]  # warm-up records too
    prev = b"0" * 64
    for i, line in enumerate(lines, 1):
        prefix, h = line[:-71], line[-66:-2]  # ..."prev":"<64>",  "h":"<64>"}
        assert hashlib.sha256(prefix).hexdigest().encode() == h and prefix.endswith(b'"prev":"' + prev + b'",')
        assert json.loads(line)["seq"] == i
        prev = h


def test_compare_refuses_a_config_without_fsync(procs: Procs, tmp_path: Path) -> None:
    """A config whose a3cp_message is not durability fsync + hash sha256 is refused before any case runs."""
    config = tmp_path / "os.toml"
    text = (REPO / "configs" / "recorder.toml").read_text(encoding="utf-8")
    config.write_text(text.replace('durability = "fsync"', 'durability = "os"'), encoding="utf-8")
    out = tmp_path / "compare.json"
    p = procs.spawn("compare", ["-m", "benchmarks", "compare", "--quick", "--config", str(config), "--no-plot",
                                "--dir", str(tmp_path), "--out", str(out)], env={"PYTHONPATH": str(REPO)}, cwd=REPO)
    assert p.wait(timeout=30) != 0, p.describe()
    assert not out.exists() and "durability" in "\n".join(p.err)
