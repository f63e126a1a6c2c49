"""Clock formatting and the runtime environment written into file headers (NF5)."""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

#: the package version (``recorder.__version__``), kept here so every part can name it without importing the package root
__version__ = "0.1.1"

_PACKAGES = ("recorder", "pydantic", "pyzmq", "msgspec", "pyarrow", "psutil")


_last_second: list[Any] = [-1, ""]  # strftime is the slow part: reuse it within a second


def iso_ns(ns: int) -> str:
    """Integer nanoseconds -> ``2026-11-25T09:00:00.123456Z`` (fixed width, sortable)."""
    s, rest = divmod(ns, 1_000_000_000)
    cached = _last_second
    if cached[0] != s:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
        cached[0] = s
    return f"{cached[1]}.{rest // 1000:06d}Z"


def iso_ms_now() -> str:
    """Now as an A3CP-style timestamp with milliseconds and ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def runtime_env(config_digest: str) -> dict[str, Any]:
    """Who wrote a file: host, pid, Python, package versions, config digest."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "config_digest": config_digest,
    }
