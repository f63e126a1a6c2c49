"""The publisher process (``python -m recorder.publish``, started by the supervisor) and the one-shot run.

The process holds the publication lock for as long as it runs, publishes a
round every ``interval_s``, and after a failed round waits with a growing
backoff (up to ``backoff_max_s``); SIGTERM stops it between commits. It
exits 2 when publication must stop until a person looks (a recorder id
cloned onto another device, a config it cannot use), and the supervisor
then leaves it stopped; any other exit is restarted, never counted against
the recorder.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .. import _logging
from .._progress import Progress
from ..schema.config import Config, load_config
from ..exceptions import ConfigError, PublishError, RecorderError, RecorderIdConflict
from ._publisher import Publisher
from ._state import lock_publication

__all__ = ["EXIT_STOP", "publish_once", "serve"]

EXIT_STOP = 2  # publication stopped for a reason a restart cannot fix
_log = logging.getLogger("recorder.publish")


def publish_once(root: str, config: Config, show_progress: bool = True) -> dict[str, Any]:
    """Publish every ready segment of ``root`` now (``recorder publish``); returns the state after it.

    Raises:
        RecorderError: another publisher holds the publication lock.
        PublishError: the store failed; what was committed stays committed.
    """
    fd = lock_publication(root)
    try:
        total: list[int] = [0]
        progress: Progress | None = None

        def advance(_m: dict[str, Any]) -> None:
            if progress is not None:
                progress.advance(1)

        pub = Publisher(root, config, on_segment=advance)
        total[0] = len(pub.pending())
        progress = Progress(total[0], "publish", enabled=show_progress, unit="segments")
        try:
            done = pub.round()
        except PublishError as e:
            pub.failed(e)
            raise
        finally:
            progress.done()
        state = dict(pub.state)
        state["published_now"] = done
        return state
    finally:
        os.close(fd)


def serve(root: str, config: Config, stop: threading.Event) -> int:
    """Publish until ``stop`` is set; the exit status of the publisher process."""
    p = config.publish
    assert p is not None
    try:
        fd = lock_publication(root)
    except RecorderError as e:
        _log.error("%s", e)
        return EXIT_STOP
    try:
        pub = Publisher(root, config)
        _log.info("publishing %s into %s as recorder %s", ", ".join(sorted(pub.types)) or "no types",
                  p.table_root, pub.recorder_id)
        delay = p.interval_s
        while not stop.is_set():
            try:
                n = pub.round()
                if n:
                    _log.info("published %d segments (%d waiting)", n, pub.state["backlog"]["segments"])
                delay = p.interval_s
            except RecorderIdConflict as e:
                pub.failed(e)
                _log.error("publication stopped: %s", e)
                return EXIT_STOP
            except (PublishError, OSError) as e:
                pub.failed(e)
                delay = min(max(delay * 2, p.interval_s), p.backoff_max_s)
                _log.warning("publication failed, retrying in %.1f s: %s", delay, e)
            stop.wait(delay)
        return 0
    except ConfigError as e:
        _log.error("%s", e)
        return EXIT_STOP
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recorder.publish --data-root DIR [--config TOML]``: the publisher process."""
    ap = argparse.ArgumentParser(prog="python -m recorder.publish")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--config")
    ap.add_argument("--log-format", choices=["plain", "json"], default="plain")
    ap.add_argument("--log-level", default="info")
    a = ap.parse_args(argv)
    _logging.configure(a.log_format, a.log_level)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        config = load_config(a.config)
    except ConfigError as e:
        _log.error("%s", e)
        return EXIT_STOP
    if config.publish is None:
        _log.error("%s: no [publish] table; nothing to publish", config.source)
        return EXIT_STOP
    print(f"PUBLISHER READY {os.getpid()}", flush=True)
    return serve(os.path.realpath(a.data_root), config, stop)


if __name__ == "__main__":
    sys.exit(main())
