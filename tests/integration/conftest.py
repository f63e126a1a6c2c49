"""Fixtures of the integration tests: processes cleaned up pass or fail, data roots, clients.

A failing test's teardown prints each process's command, exit code and the
tail of its stderr, so the report shows what the processes said.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recorder import Client
from recorder.exceptions import RecorderError

from .service_support import Procs


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[Procs]:
    """Start processes through this; every one is stopped at teardown, pass or fail."""
    p = Procs()
    try:
        yield p
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for proc in p.started:
                print(proc.describe())
        p.cleanup()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A fresh data root; the recorder's run dir is derived from its hash, so ipc paths stay short."""
    return tmp_path / "data"


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """Make in-process Clients; each is closed at teardown without waiting on a dead recorder."""
    made: list[Client] = []

    def make(root: Path, **kw: Any) -> Client:
        kw.setdefault("user_id", "user01")
        kw.setdefault("session_id", "sess01")
        c = Client(data_root=str(root), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.close(timeout=0.2)
        except RecorderError:
            pass




@pytest.fixture
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real SeaweedFS S3 server (``weed mini``) on free 127.0.0.1 ports, probed for conditional PUTs.

    Stopped at teardown (TERM, then KILL after a few seconds); the socket
    files weed leaves in /tmp are removed.
    """
    from .fleet_support import need_fleet

    need_fleet()
    from recorder.publish._seaweed import SeaweedServer

    server = SeaweedServer(str(tmp_path_factory.mktemp("seaweed")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
