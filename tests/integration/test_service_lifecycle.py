"""Starting and stopping the supervised recorder: graceful stop, and one recorder per data root."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recorder import Client
from recorder.testing import sample_message

from .service_support import (
    Procs,
    assert_verified,
    audit_events,
    by_producer,
    check_exactly_once,
    message_file,
    temp_files,
    wait_for,
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_stop_loses_nothing_acknowledged(procs: Procs, data_root: Path, sig: signal.Signals) -> None:
    """A signal to the supervisor mid-traffic stops it with exit 0 within seconds, every acknowledged record on disk."""
    sup = procs.supervisor(data_root)
    child = sup.first_ready["pid"]
    p = procs.producer(data_root, 1500, rate=1000, audit_every=50, flush_timeout=1)
    path = message_file(data_root)
    wait_for(lambda: path.exists() and path.stat().st_size > 300_000, 20, "traffic on disk",
             state=lambda: path.exists() and path.stat().st_size)
    t0 = time.monotonic()
    sup.signal(sig)
    assert sup.wait(10) == 0, sup.describe()
    took = time.monotonic() - t0
    assert took < 5, f"graceful stop took {took:.1f} s"
    assert sup.ready_nowait() is None, "the recorder was restarted instead of stopped"
    r = p.result(timeout=30)
    assert r["rejected"] == [], r
    assert 0 < r["acked"] <= r["sent"], r
    check_exactly_once(data_root, [r])
    # Everything received before the stop was written: a prefix, no holes.
    stored = sorted(by_producer(data_root)[r["producer"]])
    assert stored == list(range(1, len(stored) + 1))
    assert len(stored) >= r["acked"]
    events = audit_events(data_root)
    assert events[-1] == "recorder_stop", events
    assert events.count("recorder_start") == 1, events
    assert Path(f"{path}.head").exists(), "a clean close leaves a head checkpoint"
    assert_verified(data_root)
    assert temp_files(data_root) == []
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.mark.parametrize("alias", [False, True], ids=["same-path", "symlinked-path"])
def test_second_recorder_on_the_same_data_root_is_refused(
        procs: Procs, data_root: Path, clients: Callable[..., Client], tmp_path: Path, alias: bool) -> None:
    """A second `recorder run` or bare recorder on a running data root exits non-zero, saying why; the first keeps working."""
    sup = procs.supervisor(data_root)
    root2 = data_root
    if alias:
        root2 = tmp_path / "alias"
        root2.symlink_to(data_root, target_is_directory=True)
    ingress = sup.first_ready["ingress"][len("ipc://"):]
    for second in (procs.supervisor(root2, ready=False), procs.recorder(root2, ready=False)):
        rc = second.wait(30)
        assert rc != 0, second.describe()
        err = second.stderr()
        assert "another recorder" in err and f"pid {sup.pid}" in err, err
        assert second.ready_nowait() is None
    assert os.path.exists(ingress), "the refused recorder removed the running one's socket"
    c = clients(data_root, timeout=20)
    for i in range(5):
        c.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
    c.flush(timeout=20)
    assert sup.returncode is None and sup.ready_nowait() is None
    sup.signal(signal.SIGTERM)
    assert sup.wait(10) == 0
    assert by_producer(data_root)[c.producer] == [1, 2, 3, 4, 5]
    assert audit_events(data_root).count("recorder_start") == 1
