"""The Client never loses a record silently: closed clients refuse, exits and exceptions say what
was left unacknowledged, and a recorder that never answered is named as such."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recorder import Client, ClientClosed
from recorder.exceptions import RecorderUnavailable
from recorder.testing import sample_message

from .service_support import Procs, by_producer, clean_env


def test_record_after_close_raises(procs: Procs, data_root: Path, clients: Callable[..., Client]) -> None:
    """A closed Client refuses record() with ClientClosed instead of handing out a receipt it never keeps."""
    procs.supervisor(data_root)
    c = clients(data_root, timeout=20)
    c.record(sample_message("user01", "sess01", 0), schema_type="a3cp_message", wait=True)
    c.close()
    with pytest.raises(ClientClosed):
        c.record(sample_message("user01", "sess01", 1), schema_type="a3cp_message")
    assert by_producer(data_root)[c.producer] == [1]


def test_a_script_exiting_with_unacknowledged_records_says_so(tmp_path: Path) -> None:
    """A process that records without a recorder and exits without flush() logs how many records were
    left and where they were meant to go."""
    script = textwrap.dedent(f"""
        from recorder import Client
        from recorder.testing import sample_message
        c = Client(data_root={str(tmp_path / "nodata")!r}, block=False)
        for i in range(3):
            c.record(sample_message("user01", "sess01", i), schema_type="a3cp_message")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert r.returncode == 0, r.stderr
    assert "3 record(s) not acknowledged" in r.stderr and "nodata" in r.stderr, r.stderr


def test_leaving_a_client_on_an_exception_logs_and_keeps_the_exception(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``with Client(...)`` left by an exception re-raises that exception (cleanup never masks it) and
    logs the unacknowledged count."""
    caplog.set_level(logging.WARNING, logger="recorder.client")
    with pytest.raises(KeyError, match="original"):
        with Client(data_root=str(tmp_path / "nodata"), block=False) as c:
            c.record(sample_message("user01", "sess01", 0), schema_type="a3cp_message")
            raise KeyError("original")
    assert any("1 record(s) not acknowledged" in r.getMessage() for r in caplog.records), caplog.text


def test_a_recorder_that_never_answered_is_named_within_the_connect_timeout(tmp_path: Path) -> None:
    """Waiting on a client that never reached a recorder fails after connect_timeout, naming the
    endpoint and the data root, not with the words of a recorder that stopped acknowledging."""
    root = tmp_path / "nodata"
    c = Client(data_root=str(root), connect_timeout=0.5, timeout=30)
    try:
        t0 = time.monotonic()
        with pytest.raises(RecorderUnavailable) as info:
            c.record(sample_message("user01", "sess01", 0), schema_type="a3cp_message", wait=True)
        waited = time.monotonic() - t0
        assert waited < 30, "it waited for the whole timeout instead of the connect timeout"
        text = str(info.value)
        assert "no recorder answered" in text and c.endpoint in text and str(root) in text
        assert "stopped acknowledging" not in text
    finally:
        _close_quietly(c)


def _close_quietly(c: Client) -> None:
    try:
        c.close(timeout=0)
    except RecorderUnavailable:
        pass
