"""``recorder publish``: publish now (one shot, with progress), or ``--check`` the tables against the catalog.

Registered by ``recorder/cli.py`` through its ``command()`` helper, like
replay; deltalake is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from ..schema.config import Config, load_config
from ..exceptions import NotARecording, UsageError
from ..storage import INTERNAL_DIR
from ._state import lock_publication

__all__ = ["add_commands", "restore_publication"]


def _config(args: argparse.Namespace) -> tuple[str, object]:
    config = load_config(args.config)
    if config.publish is None:
        raise UsageError("--config", f"{config.source} has no [publish] table (docs/FLEET.md)")
    root = args.root or args.data_root or config.recorder.data_root
    if not os.path.isdir(os.path.join(root, INTERNAL_DIR)):
        raise NotARecording(root, f"not a data root (no {INTERNAL_DIR}/ directory)")
    return os.path.realpath(root), config


def _cmd_publish(args: argparse.Namespace) -> int:
    from ._check import check
    from ._service import publish_once

    root, config = _config(args)
    if args.check:
        report = check(root, config)  # type: ignore[arg-type]
        for p in report.problems:
            print(f"BAD  {p}")
        print(report.summary())
        return 1 if report.problems else 0
    state = publish_once(root, config, show_progress=not args.quiet)  # type: ignore[arg-type]
    b = state.get("backlog", {})
    print(f"publish: {state['published_now']} segments committed now into {state['table_root']} as "
          f"recorder {state['recorder_id']}; {b.get('segments', 0)} waiting ({b.get('bytes', 0)} bytes); "
          f"{state.get('conflicts_retried', 0)} commit conflicts retried in all")
    return 0


def restore_publication(root: str, config: Config) -> dict[str, int]:
    """After a catalog rebuild: the publication state again from the tables' transaction versions.

    Holds the publication lock while it works; returns table -> version.

    Raises:
        RecorderError: another publisher holds the publication lock.
        PublishError: the tables cannot be read (or the fleet extra is missing).
    """
    from ._publisher import Publisher

    lock = lock_publication(root)
    try:
        return Publisher(root, config).restore()
    finally:
        os.close(lock)


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register ``publish`` with the CLI's ``command(name, help)`` helper."""
    p = command("publish", "publish sealed segments into the [publish] Delta tables now, or --check them")
    p.add_argument("root", nargs="?", help="data root")
    p.add_argument("--config", metavar="TOML", help="registry TOML with a [publish] table")
    p.add_argument("--check", action="store_true",
                   help="compare every table with the local catalog (each sealed segment once, same rows and "
                        "chain head); exit 1 on a difference")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line (drawn only on a terminal)")
    p.set_defaults(func=_cmd_publish)
