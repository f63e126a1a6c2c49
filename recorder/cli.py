"""The ``recorder`` command: demo, run, read, verify, stats."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec

from .exceptions import RecorderError
from .reader import read, verify


def _cmd_verify(args: argparse.Namespace) -> int:
    n, problems = verify(args.paths, show_progress=not args.quiet)
    for p in problems:
        print(f"BAD  {p}")
    print(f"verify: {n} files checked, {len(problems)} with problems")
    return 1 if problems else 0


def _cmd_read(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for e in read(args.root, schema_type=args.type, user_id=args.user, session_id=args.session,
                  since=args.since, until=args.until):
        out.write(msgspec.json.encode(e) + b"\n")
    out.flush()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recorder", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("verify", help="check journals: headers, hash chains, order, checkpoints")
    p.add_argument("paths", nargs="+", help="files or directories (a data root)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("read", help="print stored records as JSONL, in insertion order")
    p.add_argument("root", help="data root (or a directory below it)")
    p.add_argument("--type", help="schema type")
    p.add_argument("--user", help="user_id")
    p.add_argument("--session", help="session_id")
    p.add_argument("--since", help="record timestamp >= this ISO-8601 UTC time")
    p.add_argument("--until", help="record timestamp < this ISO-8601 UTC time")
    p.set_defaults(func=_cmd_read)

    p = sub.add_parser("demo", help="record the example schemas from several producers, then verify")
    p.add_argument("--dir", help="data root to record into (default: a new temporary directory)")
    p.add_argument("--config", help="registry TOML (default: the packaged example)")
    p.add_argument("--producers", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.set_defaults(func=_cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recorder`` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RecorderError as e:
        print(f"recorder: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
