"""The recorder process's entry point: ``python -m recorder.router``.

Loads the config, takes the endpoint lock when unsupervised, builds the
Store and the ingest loop (``recorder.service``), and prints one
``READY {json}`` line on stdout when it accepts records.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
from typing import Any

import msgspec
import zmq

from .. import _logging
from ..schema.endpoints import endpoints
from ._run import lock_endpoints, release_endpoints
from ..schema.config import load_config
from ..exceptions import RecorderError
from ..schema.registry import Registry
from .loop import IngestLoop
from ..store import Store

__all__ = ["main"]

SWITCH_INTERVAL_S = 0.0002
_log = logging.getLogger("recorder.service")


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the supervisor dies, so do we, and the lock is freed.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the recorder process."""
    ap = argparse.ArgumentParser(prog="python -m recorder.router")
    ap.add_argument("--config", help="registry TOML (default: the packaged example)")
    ap.add_argument("--data-root", help="overrides recorder.data_root")
    ap.add_argument("--restarts", type=int, default=0, help="restarts so far (reported in stats)")
    ap.add_argument("--supervised", action="store_true", help="the supervisor holds the endpoint lock")
    ap.add_argument("--log-format", choices=["plain", "json"], help="default: recorder.log_format")
    ap.add_argument("--log-level", choices=list(_logging.LEVELS), help="default: recorder.log_level")
    args = ap.parse_args(argv)
    _logging.configure(args.log_format or "plain", args.log_level or "info")
    if args.supervised:
        _die_with_parent()
        if os.getppid() == 1:
            return 1
    stop = {"flag": False}
    router: IngestLoop | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True
        if router is not None:
            router.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The ingest loop must get the GIL back quickly from a sync thread that
    # builds envelopes: with the default 5 ms switch interval every ack waits up to 5 ms more.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    lock: int | None = None
    try:
        config = load_config(args.config)
        if args.log_format is None or args.log_level is None:
            _logging.configure(args.log_format or config.recorder.log_format,
                               args.log_level or config.recorder.log_level)
        root = args.data_root or config.recorder.data_root
        ep = endpoints(config, root)
        Registry.from_config(config)  # models import and paths cannot collide: before anything is created
        if not args.supervised:
            lock = lock_endpoints(ep)
        store = Store(config, data_root=root)
    except RecorderError as e:
        _log.error("%s", e)
        if lock is not None:
            release_endpoints(ep, lock)
        return 2
    router = IngestLoop(store, ep, args.restarts)
    router.stopping = stop["flag"]
    try:
        router.bind()
    except (RecorderError, zmq.ZMQError) as e:
        _log.error("%s", e)
        store.close()
        router.close_sockets()
        if lock is not None:
            release_endpoints(ep, lock)
        return 2
    store.event("recorder_ready", {"pid": os.getpid(), "epoch": router.epoch, "restarts": args.restarts})
    ready = {"pid": os.getpid(), "epoch": router.epoch, "ingress": ep.ingress, "control": ep.control,
             "data_root": store.root}
    _log.info("recording into %s: %d types, ingress %s, control %s", store.root, len(router.actors),
              ep.ingress, ep.control, extra={"fields": {"restarts": args.restarts}})
    sys.stdout.write("READY " + msgspec.json.encode(ready).decode() + "\n")
    sys.stdout.flush()
    rc = router.serve()
    if rc == 3 and router.fatal:
        sys.stdout.write("FATAL " + router.fatal.replace("\n", " ") + "\n")  # the supervisor's reason to give up
        sys.stdout.flush()
    if rc == 0:
        _log.info("stopped cleanly: %d records written, %d refused", sum(a.records for a in router.actors.values()),
                  sum(a.rejects for a in router.actors.values()) + sum(
                      n for c in router.ingress_rejects.values() for n in c.values()))
    if lock is not None:
        release_endpoints(ep, lock)
    return rc


if __name__ == "__main__":
    sys.exit(main())
