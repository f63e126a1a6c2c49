"""Exact restart de-duplication (issue 12): a resend is never written twice, however old its records.

A raw producer (PUSH and DEALER of this process) sends records whose
acknowledgements it never reads, as if they were all lost. Then another
client writes megabytes more into the same file, far beyond any tail the
recorder reads at start, and the recorder is SIGKILLed and started again.
The raw producer says Hello with ``acked = 0`` and resends everything:
each record must be found durable and not written again. Negative control:
without the durable index's checkpoint the restart sees only the files'
ends, and the old records are written twice.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from recorder import Client
from recorder import protocol as P
from recorder.testing import sample_message

from .service_support import Procs, on_disk, stats, wait_for

pytestmark = pytest.mark.timeout(240)
RAW = "praw01"
N = 50


def _send_raw(ctx: zmq.Context[Any], ingress: str, first: int, last: int) -> zmq.Socket[Any]:
    """Push the raw producer's records; the socket stays open (closed by the context) so that ZeroMQ
    delivers what the recorder's small receive queue has not taken yet."""
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(ingress)
    for pseq in range(first, last + 1):
        rec = json.dumps(sample_message("user01", "sess01", 10_000 + pseq)).encode()
        push.send(P.encode(P.Record(RAW, pseq, "a3cp_message", rec)))
    return push


def _hello(ctx: zmq.Context[Any], control: str) -> P.Welcome:
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, RAW.encode())
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(control)
    try:
        dealer.send(P.encode(P.Hello(RAW, 0)))
        while True:
            assert dealer.poll(30_000), "no Welcome within 30 s"
            msg = P.decode_control(dealer.recv())
            if isinstance(msg, P.Welcome):
                return msg
    finally:
        dealer.close()


def _raw_on_disk(root: Path) -> Counter[int]:
    return Counter(e["pseq"] for e in on_disk(root) if e.get("producer") == RAW)


@pytest.mark.parametrize("checkpoint", [True, False], ids=["index", "negative-control-no-index"])
def test_a_resend_after_acks_lost_for_longer_than_any_window_is_not_written_again(
        procs: Procs, data_root: Path, clients: Callable[..., Client], checkpoint: bool) -> None:
    proc = procs.recorder(data_root)
    ep = proc.first_ready
    ctx: zmq.Context[Any] = zmq.Context()
    socks: list[zmq.Socket[Any]] = []
    try:
        socks.append(_send_raw(ctx, ep["ingress"], 1, N))  # pseq 1 is an implicit Hello; no ack is ever read
        wait_for(lambda: len(_raw_on_disk(data_root)) == N, 60, f"the raw producer's {N} records durable",
                 state=lambda: (_raw_on_disk(data_root), stats(data_root)))
        # megabytes of other records after them in the same file, in many batches
        c = clients(data_root, timeout=120)
        pad = "x" * 6000
        for i in range(1500):
            m = sample_message("user01", "sess01", i)
            m["annotation"] = {**m["annotation"], "notes": pad}  # type: ignore[dict-item]
            c.record(m, schema_type="a3cp_message")
            if i % 100 == 99:
                c.flush(timeout=120)
        c.flush(timeout=120)
        wait_for(lambda: (data_root / "_recorder" / "state" / "producers.json").exists(), 30,
                 "the durable index checkpointed")
        os.kill(ep["pid"], signal.SIGKILL)
        proc.wait(30)
        if not checkpoint:
            (data_root / "_recorder" / "state" / "producers.json").unlink()
        proc2 = procs.recorder(data_root)
        welcome = _hello(ctx, proc2.first_ready["control"])
        assert welcome.expected == 1
        socks.append(_send_raw(ctx, proc2.first_ready["ingress"], 1, N + 1))  # everything again, and one new  # and one new record, to know when it is done
        wait_for(lambda: _raw_on_disk(data_root)[N + 1] == 1, 60, "the new record durable")
        counts = _raw_on_disk(data_root)
        twice = sorted(p for p, n in counts.items() if n > 1)
        if checkpoint:
            assert twice == [] and sorted(counts) == list(range(1, N + 2))
        else:
            assert twice, "negative control: without the index the old records should be written again"
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.destroy(linger=0)
