"""Where a recorder listens: its run directory and endpoints, derived from the config and the data root.

Below the service and the client, so both derive the same endpoints.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ..exceptions import RecorderError
from .config import Config

__all__ = ["Endpoints", "endpoints"]


@dataclass(frozen=True)
class Endpoints:
    """The ingress (PULL) and control (ROUTER) endpoints of one recorder."""

    run_dir: str
    ingress: str
    control: str
    default_run_dir: bool = True  # derived from the data root, not configured: removed after a stop


def endpoints(config: Config, data_root: str) -> Endpoints:
    """Endpoints from the config, or ipc sockets in a short, owner-only run directory.

    ipc paths are limited to about 107 bytes, so the default run directory
    lives under /tmp and is named by a hash of the data root.
    """
    s = config.recorder
    root = os.path.realpath(data_root)
    run_dir = s.run_dir or f"/tmp/recorder-{os.getuid()}/{hashlib.sha256(root.encode()).hexdigest()[:12]}"
    ingress = s.endpoint or f"ipc://{run_dir}/ingress"
    control = s.control_endpoint or f"ipc://{run_dir}/control"
    for ep in (ingress, control):
        if ep.startswith("ipc://") and len(ep) - 6 > 100:
            raise RecorderError(f"ipc path too long ({len(ep) - 6} bytes > 100): {ep}; set recorder.run_dir")
    return Endpoints(run_dir, ingress, control, not s.run_dir)
