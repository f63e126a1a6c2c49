"""Wire frames between clients and the recorder, encoded and decoded side by side.

Every frame is one msgpack array whose first element is a tag. Records go
over PUSH -> PULL, one ``Record`` or a ``Batch`` of them per frame;
everything else over DEALER <-> ROUTER, where the client's routing id is
its producer id. docs/FORMAT.md ("Wire protocol")
describes the exchange.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Ack",
    "Batch",
    "Hello",
    "Nack",
    "Ping",
    "Record",
    "StatsReply",
    "StatsRequest",
    "Welcome",
    "decode_control",
    "decode_ingress",
    "decode_record",
    "encode",
    "encode_batch",
]

#: 2: records may come grouped in a Batch frame; Welcome announces the largest frame read
PROTOCOL_VERSION = 2


class Record(msgspec.Struct, array_like=True, omit_defaults=True, tag="r"):
    """One record from a producer; ``record`` is the record's JSON bytes."""

    producer: str
    pseq: int
    schema_type: str
    record: bytes
    schema_version: str | None = None
    record_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    source: str | None = None
    action_id: str | None = None
    tags: dict[str, str] | None = None


class Batch(msgspec.Struct, array_like=True, tag="b"):
    """Several records of one producer in one frame, in pseq order (each counted and acknowledged alone)."""

    records: list[Record]


class Hello(msgspec.Struct, array_like=True, tag="hello"):
    """A client (re)introduces itself with the highest sequence it knows is acknowledged."""

    producer: str
    acked: int
    pid: int = 0
    host: str = ""
    version: int = PROTOCOL_VERSION


class Ping(msgspec.Struct, array_like=True, tag="ping"):
    """Asks for the recorder's epoch and this producer's watermark."""

    producer: str


class StatsRequest(msgspec.Struct, array_like=True, tag="stats?"):
    """Asks for the recorder's counters (``recorder stats``)."""


class Welcome(msgspec.Struct, array_like=True, tag="welcome"):
    """Answer to Hello/Ping: the epoch, the watermark, and the next sequence expected.

    ``expected == 0`` means the recorder does not know this producer: say Hello.
    """

    epoch: int
    watermark: int
    expected: int
    max_frame: int = 0  # the largest ingress frame the recorder reads (0: not announced, protocol 1)


class Ack(msgspec.Struct, array_like=True, tag="ack"):
    """Everything up to ``watermark`` is durable or rejected; rejections listed."""

    epoch: int
    watermark: int
    rejections: list[tuple[int, str, str, str]] = []  # (pseq, code, field, reason)


class Nack(msgspec.Struct, array_like=True, tag="nack"):
    """A record arrived after a gap (or from an unknown producer): resend from ``expected``."""

    epoch: int
    expected: int  # 0: unknown producer, say Hello first


class StatsReply(msgspec.Struct, array_like=True, tag="stats"):
    """The recorder's counters as JSON bytes."""

    body: bytes


_Control = Hello | Ping | StatsRequest | Welcome | Ack | Nack | StatsReply
_enc = msgspec.msgpack.Encoder()
_rec_dec = msgspec.msgpack.Decoder(Record)
_ingress_dec = msgspec.msgpack.Decoder(Record | Batch)
_ctl_dec = msgspec.msgpack.Decoder(_Control)


def encode(frame: Record | Batch | _Control) -> bytes:
    """Encode any frame."""
    return _enc.encode(frame)


def encode_batch(records: list[bytes]) -> bytes:
    """A Batch frame of already encoded Record frames, without decoding them again."""
    return _enc.encode(Batch([msgspec.Raw(r) for r in records]))  # type: ignore[misc]


def decode_ingress(data: bytes) -> Record | Batch:
    """Decode an ingress frame; raises msgspec.DecodeError/ValidationError if malformed."""
    try:
        frame: Record | Batch = _ingress_dec.decode(data)
    except UnicodeDecodeError as e:
        raise msgspec.DecodeError(f"invalid UTF-8 in frame: {e}") from e
    return frame


def decode_record(data: bytes) -> Record:
    """Decode a record frame; raises msgspec.DecodeError/ValidationError if malformed."""
    try:
        return _rec_dec.decode(data)
    except UnicodeDecodeError as e:  # msgpack strings that are not UTF-8
        raise msgspec.DecodeError(f"invalid UTF-8 in frame: {e}") from e


def decode_control(data: bytes) -> _Control:
    """Decode a control frame; raises msgspec.DecodeError/ValidationError if malformed."""
    try:
        msg: _Control = _ctl_dec.decode(data)
    except UnicodeDecodeError as e:
        raise msgspec.DecodeError(f"invalid UTF-8 in frame: {e}") from e
    return msg
