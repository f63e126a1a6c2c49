"""The object store down under a running recorder: acknowledgements as before, the backlog reported, catch-up after.

A real supervisor runs the recorder and its publisher; producers send
paced records while SeaweedFS is stopped. The publisher is also SIGKILLed:
the supervisor restarts it without counting it as a recorder restart.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from recorder.publish._state import catalog_segments, load_state, published

from .fleet_support import write_config
from .service_support import Procs, wait_for

pytestmark = pytest.mark.slow


def _publisher_pids(sup: Any) -> list[int]:
    return [json.loads(line[10:])["pid"] for line in list(sup.out) if line.startswith("PUBLISHER ")]


def test_store_outage_leaves_acks_alone_and_publication_catches_up(tmp_path: Path, seaweed: Any,
                                                                   procs: Procs) -> None:
    """With the store down records are acknowledged, stats show the backlog and error; all lands once it returns."""
    cfg = write_config(tmp_path / "r.toml", f"s3://{seaweed.bucket}/outage", "rec-out", endpoint=seaweed.endpoint,
                       msg_rotate=20)
    root = tmp_path / "root"
    seaweed.stop()
    sup = procs.supervisor(root, env=seaweed.env(), extra=["--config", str(cfg)])
    wait_for(lambda: _publisher_pids(sup), 30, "the supervisor to start a publisher")
    prod = procs.producer(root, 100, rate=200)
    res = prod.result(timeout=120)
    assert res["acked"] == 100 and not res["rejected"], res
    wait_for(lambda: load_state(str(root)).get("backlog", {}).get("segments", 0) >= 4, 60,
             "the publisher to report the backlog", lambda: load_state(str(root)))
    state = load_state(str(root))
    assert state.get("last_error") and not state.get("last_success")
    stats = json.loads(__import__("subprocess").run(
        [__import__("sys").executable, "-m", "recorder", "stats", "--data-root", str(root), "--config", str(cfg),
         "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert stats["publish"]["backlog"]["segments"] >= 4 and stats["restarts"] == 0
    first = _publisher_pids(sup)[-1]
    __import__("os").kill(first, signal.SIGKILL)  # a publisher crash: restarted, not a recorder restart
    wait_for(lambda: _publisher_pids(sup)[-1] != first, 30, "the publisher to be restarted")
    seaweed.start()
    wait_for(lambda: all(published(m, load_state(str(root))["tables"]) for m in catalog_segments(str(root))
                         if m["schema_type"] == "a3cp_message"), 90, "publication to catch up",
             lambda: load_state(str(root)))
    assert load_state(str(root))["backlog"]["segments"] == 0
    assert sup.ready_nowait() is None  # no second READY: the recorder itself never restarted
