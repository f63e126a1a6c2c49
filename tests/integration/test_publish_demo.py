"""`recorder demo --fleet` runs end to end and reports duplicates 0 / missing 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .fleet_support import need_fleet

pytestmark = pytest.mark.slow


def test_fleet_demo_exits_zero_with_no_duplicates_or_missing(tmp_path: Path) -> None:
    """Three recorders, one publisher killed mid-run: the lake holds every sealed record once."""
    need_fleet()
    r = subprocess.run([sys.executable, "-m", "recorder", "demo", "--fleet", "--producers", "1", "--seconds", "3",
                        "--dir", str(tmp_path / "fleet")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "duplicates 0" in r.stdout and "missing 0" in r.stdout
