"""Shared harness pieces: machine facts, the per-case subprocess runner, result files, tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
RESULTS_DIR = PACKAGE_DIR / "results"
LIBRARIES = ("recorder", "msgspec", "pydantic", "pydantic_core", "pyzmq", "pyarrow", "psutil")


def progress(message: str) -> None:
    """One progress line on stderr (stdout is kept for results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def default_data_parent() -> Path:
    """Where data roots go unless ``--dir`` says otherwise: beside the results, on the repo's filesystem."""
    path = RESULTS_DIR / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def filesystem_of(path: str | Path) -> dict[str, str]:
    """Device, mount point and type of the filesystem holding ``path`` (from /proc/mounts)."""
    real = os.path.realpath(path)
    best = {"device": "?", "mount": "/", "fstype": "?"}
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                dev, mnt, fstype, *_ = line.split()
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best["mount"]):
                    best = {"device": dev, "mount": mnt, "fstype": fstype}
    except OSError:
        pass
    return best


def _git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_DIR, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "recorder"], cwd=PACKAGE_DIR.parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(data_dir: str | Path | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, OS, Python, libraries, data filesystem."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "libraries": _versions(),
        "git": _git_commit(),
    }
    if data_dir is not None:
        info["data_dir"] = str(data_dir)
        info["data_fs"] = filesystem_of(data_dir)
    return info


def run_case(case: str, argv: Sequence[str], timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python -m benchmarks <case> --one ARGV`` in a fresh interpreter; return its JSON line.

    Raises:
        RuntimeError: the child failed or printed no JSON result line.
    """
    cmd = [sys.executable, "-m", "benchmarks", case, "--one", *argv]
    proc = subprocess.run(cmd, cwd=PACKAGE_DIR.parent, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"case failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def write_results(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` as JSON to ``out`` or ``benchmarks/results/<name>-<UTC time>.json``."""
    if out is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{name}-{stamp}.json"
    else:
        path = Path(out)  # its directory exists: main() checked before the run
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows``; ``columns`` are (key, heading) pairs."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---:" if k not in ("layer", "durability") else "---" for k, _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:#.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)
