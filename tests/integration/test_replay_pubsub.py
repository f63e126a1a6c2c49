"""`recorder replay --to ENDPOINT` in its own process, received by sockets of this one (ipc, real sockets)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from recorder import Store, read
from recorder.testing import sample_audit, sample_message, sample_raw_action

from .service_support import Proc, Procs, wait_for


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sessions of messages, landmark sequences and audit events (one session sealed into Parquet)."""
    root = tmp_path_factory.mktemp("replay") / "rec"
    with Store(None, data_root=root) as s:
        for u in ("u1", "u2"):
            s.record(sample_audit(u, "s1", "session_start"), schema_type="audit_event")
            for i in range(60):
                s.record(sample_message(u, "s1", i), schema_type="a3cp_message")
                if i % 10 == 0:
                    s.record(sample_raw_action(u, "s1", i), schema_type="raw_action")
        s.record(sample_audit("u1", "s1", "session_end", 1), schema_type="audit_event")
        s.sealer.wait_idle(30)
    return root


@pytest.fixture
def sockets() -> Iterator[Callable[..., Any]]:
    """Make connected receiving sockets; each is closed with linger 0 at teardown, pass or fail."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    made: list[Any] = []

    def make(kind: int, endpoint: str, topic: bytes | None = None) -> Any:
        # connecting before the replay binds is fine: ZeroMQ retries
        s = ctx.socket(kind)
        made.append(s)
        s.setsockopt(zmq.LINGER, 0)
        if topic is not None:
            s.setsockopt(zmq.SUBSCRIBE, topic)
        s.connect(endpoint)
        return s

    yield make
    for s in made:
        s.close(linger=0)
    ctx.term()


def receive(sock: Any, n: int, timeout: float, proc: Proc) -> list[tuple[str, dict[str, Any]]]:
    """Exactly ``n`` messages [topic, JSON] within ``timeout``; then none more once the replay has exited."""
    got: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"received {len(got)} of {n} within {timeout:g} s\n{proc.describe()}")
        if sock.poll(100):
            topic, body = sock.recv_multipart()
            got.append((topic.decode(), json.loads(body)))
    assert proc.wait(30) == 0, proc.describe()
    assert not sock.poll(200), "more messages than records"
    return got


def replay_cmd(root: Path, endpoint: str, *extra: str) -> list[str]:
    return ["-m", "recorder", "replay", str(root), "--to", endpoint, "-q", *extra]


def test_pub_sub_replay_delivers_every_record_once_in_order(recording: Path, tmp_path: Path, procs: Procs,
                                                            sockets: Callable[..., Any]) -> None:
    """A replay to PUB reaches subscribers set up first (XPUB subscription wait): each record once, in order,
    topic = schema type, and a topic subscription gets just its type."""
    endpoint = f"ipc://{tmp_path}/replay.ipc"
    everything = sockets(zmq.SUB, endpoint, b"")
    audits = sockets(zmq.SUB, endpoint, b"audit_event")
    proc = procs.spawn("replay", replay_cmd(recording, endpoint, "--speed", "5", "--wait-subscribers", "2"))
    want = [{k: v for k, v in e.items() if k not in ("commit", "prev", "h")} for e in read(recording)]
    got = receive(everything, len(want), 60, proc)
    assert [body for _t, body in got] == want
    assert [t for t, _b in got] == [e["schema_type"] for e in want]
    assert len({e["schema_type"] for e in want}) == 3 and list(recording.rglob("*.parquet"))
    audit_want = [e for e in want if e["schema_type"] == "audit_event"]
    assert [body for _t, body in receive(audits, len(audit_want), 10, proc)] == audit_want


def test_push_pull_replay_waits_for_its_peer(recording: Path, tmp_path: Path, procs: Procs,
                                             sockets: Callable[..., Any]) -> None:
    """--pattern push starts once a PULL peer connected and delivers every record once, in order."""
    endpoint = f"ipc://{tmp_path}/push.ipc"
    proc = procs.spawn("replay", replay_cmd(recording, endpoint, "--pattern", "push", "--max",
                                            "--wait-subscribers", "1", "--record-only"))
    pull = sockets(zmq.PULL, endpoint)
    want = [e["record"] for e in read(recording)]
    assert [body for _t, body in receive(pull, len(want), 60, proc)] == want


def test_ctrl_c_stops_a_looping_replay_cleanly(recording: Path, tmp_path: Path, procs: Procs,
                                               sockets: Callable[..., Any]) -> None:
    """SIGINT stops `replay --loop` with exit 130 and a summary, no traceback, while records flow."""
    endpoint = f"ipc://{tmp_path}/loop.ipc"
    sub = sockets(zmq.SUB, endpoint, b"")
    proc = procs.spawn("replay", ["-m", "recorder", "replay", str(recording), "--to", endpoint, "--loop",
                                  "--speed", "0.5", "--wait-subscribers", "1"])
    wait_for(lambda: sub.poll(100) and sub.recv_multipart(), 30, "a first record", proc.describe)
    proc.signal(signal.SIGINT)
    assert proc.wait(15) == 130, proc.describe()
    err = proc.stderr()
    assert "stopped" in err and "Traceback" not in err
