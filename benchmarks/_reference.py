"""The ``reference`` variant of ``compare``: the recorder's duties in one short, single-threaded server.

Producers send a frame at once when none is in flight; records made meanwhile go together in the next
frame, sent when the ack comes (at most ``MAX_BATCH``: a full buffer blocks ``record()``). A frame is
``b"<producer> <first pseq> <count>\\n"`` and the records joined by ``\\n``. The server drains every
frame waiting; per record: byte checks (size, UTF-8; a line break breaks the count, refusing the frame),
a typed decode, an envelope (seq, received ns, producer, pseq, record) and a sha256 chain as in
``recorder.storage.journal``; per batch ONE write, ONE fdatasync, and ONE ack (last pseq) per producer.

    python -m benchmarks._reference ROOT     # serve in ROOT: prints READY <json>; on SIGTERM, its counters
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import sys
import time
from array import array
from typing import Annotated, Any

import msgspec
import zmq

JOURNAL, IN, ACK = "reference.jsonl", "reference-in", "reference-ack"  # files and sockets in the root
MAX_RECORD_BYTES = 65536  # the shipped max_record_bytes
MAX_BATCH = 1000  # records per frame (~1 MB: the shipped max_message_bytes)
_PRODUCER = re.compile(rb"[A-Za-z0-9_.-]{1,64}\Z")  # goes into the envelope unescaped
_UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$"
Uuid = Annotated[str, msgspec.Meta(pattern=_UUID)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class FeaturesRef(msgspec.Struct, forbid_unknown_fields=True):
    uri: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    hash: Annotated[str, msgspec.Meta(pattern="^sha256:")]
    encoding: str
    shape: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(min_length=1, max_length=8)]
    dtype: Name
    format: Name


class A3CPRecord(msgspec.Struct):
    """``recorder.a3cp.A3CPMessage`` as a Struct (extra fields allowed, as there)."""

    record_id: Uuid
    timestamp: Annotated[str, msgspec.Meta(pattern=_TIME)]
    schema_version: Annotated[str, msgspec.Meta(pattern=r"^1\.\d+\.\d+$")]  # major version 1 only
    user_id: Name
    capture_id: Uuid
    session_id: Name | None = None
    modality: Name | None = None
    source: Name | None = None
    performer_id: Name | None = None
    classifier_output: dict[Name, Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]] | None = None
    raw_features_ref: FeaturesRef | None = None
    annotation: dict[str, Any] | None = None


def accept(raw: bytes, decode: Any) -> bool:
    """The byte checks and the typed decode of one record."""
    if len(raw) > MAX_RECORD_BYTES:
        return False
    try:
        if not raw.isascii():
            raw.decode()  # UTF-8 or UnicodeDecodeError
        r = decode(raw)
    except (UnicodeDecodeError, msgspec.DecodeError):  # a msgspec.ValidationError is a DecodeError
        return False
    return r.classifier_output is None or "unknown" in r.classifier_output


def serve(root: str) -> dict[str, int]:
    """Accept, chain, write, fdatasync and acknowledge batches until SIGTERM; return the counters."""
    ctx = zmq.Context()
    pull, router = ctx.socket(zmq.PULL), ctx.socket(zmq.ROUTER)
    pull.bind(f"ipc://{root}/{IN}")
    router.bind(f"ipc://{root}/{ACK}")
    fd = os.open(os.path.join(root, JOURNAL), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    decode = msgspec.json.Decoder(A3CPRecord).decode
    head, seq, n = b"0" * 64, 0, {"records": 0, "rejected": 0, "frames": 0, "batches": 0, "bytes": 0}
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(router, zmq.POLLIN)
    print("READY " + json.dumps({"pid": os.getpid()}), flush=True)
    while not stop:
        if router in dict(poller.poll(100)):  # a producer's hello: the welcome says acks can reach it
            ident, _ = router.recv_multipart()
            router.send_multipart([ident, b"welcome"])
        frames = []
        while int(pull.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # drain: every frame waiting is one batch
            frames.append(pull.recv())
        if not frames:
            continue
        received = time.time_ns()
        lines: list[bytes] = []
        acks: dict[bytes, int] = {}  # producer -> the last pseq of its frame
        for frame in frames:
            header, *records = frame.split(b"\n")
            try:
                producer, first, count = header.split(b" ")
                pseq, size = int(first), int(count)
            except ValueError:
                n["rejected"] += len(records)  # no producer to answer
                continue
            if len(records) != size or not _PRODUCER.match(producer):
                n["rejected"] += len(records)
                records = []
            for raw in records:
                if accept(raw, decode):
                    seq += 1
                    prefix = b'{"seq":%d,"received_ns":%d,"producer":"%s","pseq":%d,"record":%s,"prev":"%s",' % (
                        seq, received, producer, pseq, raw, head)
                    head = hashlib.sha256(prefix).hexdigest().encode()
                    lines += (prefix, b'"h":"', head, b'"}\n')
                else:
                    n["rejected"] += 1
                pseq += 1
            acks[producer] = int(first) + size - 1
        data = b"".join(lines)
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {JOURNAL}")
        os.fdatasync(fd)
        for producer, upto in acks.items():
            router.send_multipart([producer, b"%d" % upto])
        n["frames"] += len(frames)
        n["batches"] += 1
        n["bytes"] += len(data)
    os.close(fd)
    ctx.destroy(linger=0)
    return n | {"records": seq}


class Producer:
    """The client side: ``record()`` encodes, then sends or batches; ``done`` holds record()->ack ns."""

    def __init__(self, root: str, name: str, timeout: float = 60.0) -> None:
        self.ctx = zmq.Context()
        self.push, self.dealer = self.ctx.socket(zmq.PUSH), self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.ROUTING_ID, name.encode())
        for sock, where in ((self.push, IN), (self.dealer, ACK)):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{root}/{where}")
        self.dealer.send(b"hello")
        if not self.dealer.poll(int(timeout * 1000)) or self.dealer.recv() != b"welcome":
            raise RuntimeError(f"no welcome from the reference server in {root} within {timeout} s")
        self.fd = int(self.dealer.getsockopt(zmq.FD))  # edge-triggered: readable means "look at EVENTS"
        self.name, self.timeout, self.next = name.encode(), timeout, 1
        self.encode = msgspec.json.Encoder().encode
        self.buf: list[bytes] = []
        self.t0s: list[int] = []
        self.inflight: tuple[int, list[int]] | None = None  # (last pseq, record() times) of the frame sent
        self.done = array("q")
        self.blocked = 0  # record() calls that waited for an ack (a full buffer)

    def record(self, d: dict[str, Any], t0: int) -> None:
        self.buf.append(self.encode(d))
        self.t0s.append(t0)
        if self.inflight is None:
            self._send()
        elif self._ack_waiting():
            self._acked()
        if len(self.buf) >= MAX_BATCH:
            self.blocked += 1
            self._wait_ack()

    def _send(self) -> None:
        n = len(self.buf)
        self.push.send(b"%s %d %d\n" % (self.name, self.next, n) + b"\n".join(self.buf))
        self.inflight, self.next, self.buf, self.t0s = (self.next + n - 1, self.t0s), self.next + n, [], []

    def _ack_waiting(self) -> bool:
        return bool(int(self.dealer.getsockopt(zmq.EVENTS)) & zmq.POLLIN)

    def _acked(self) -> None:
        """Take the ack of the frame in flight, if it came; then send what waited for it."""
        try:
            upto = int(self.dealer.recv(zmq.NOBLOCK))
        except zmq.Again:
            return
        now = time.perf_counter_ns()
        assert self.inflight is not None and upto == self.inflight[0], f"unexpected ack #{upto}"
        self.done.extend([now - t for t in self.inflight[1]])
        self.inflight = None
        if self.buf:
            self._send()

    def _wait_ack(self) -> None:
        if self.inflight is not None and not self.dealer.poll(int(self.timeout * 1000)):
            raise RuntimeError(f"no ack within {self.timeout} s")
        self._acked()

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` (pacing), taking acks (and sending what waited for them) as they come."""
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            if self._ack_waiting():
                self._acked()
            else:
                select.select([self.fd], [], [], left)  # µs resolution, where zmq's poll has ms

    def flush(self) -> None:
        while self.inflight is not None:
            self._wait_ack()

    def close(self) -> None:
        self.ctx.destroy(linger=0)


if __name__ == "__main__":
    print(json.dumps(serve(os.path.realpath(sys.argv[1]))), flush=True)
