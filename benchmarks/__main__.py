"""Dispatch ``python -m benchmarks <case> [options]`` to the case modules listed in CASES."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

#: Case modules (``benchmarks/<name>.py``); each exposes ``add_parser(subparsers)``,
#: which adds its subcommand and sets ``func`` (args -> exit code) as a default.
CASES: list[str] = [
    "append",
    "compare",
    "latency",
    "publish",
    "replay",
    "restart",
    "seal",
    "soak",
    "stages",
    "syscalls",
]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description="recorder benchmarks")
    sub = ap.add_subparsers(dest="case", required=True, metavar="CASE")
    for name in CASES:
        importlib.import_module(f"benchmarks.{name}").add_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, refuse an unusable --out before the run, and run the chosen case."""
    parser = _parser()
    args = parser.parse_args(argv)
    out = getattr(args, "out", None)
    if out:
        path = Path(out)
        if path.is_dir():
            parser.error(f"argument --out: {out} is a directory; name the results file (a .json path)")
        if not path.parent.is_dir():
            parser.error(f"argument --out: directory {path.parent} does not exist")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
