"""Ask a running recorder for its counters over the control socket (``recorder stats``, metrics)."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import zmq

from .. import protocol as P
from ..exceptions import RecorderUnavailable

__all__ = ["fetch_stats"]


def fetch_stats(ctx: zmq.Context[Any], control: str, timeout: float,
                curve: tuple[bytes, bytes, bytes] | None = None) -> dict[str, Any]:
    """The recorder's stats (``Router.stats()``), asked for on one short-lived DEALER socket.

    Args:
        ctx: the ZeroMQ context to make the socket in (thread-safe; the caller owns it).
        control: the recorder's control endpoint.
        timeout: seconds to wait for the answer.
        curve: (server public, client public, client secret) keys for a CURVE endpoint.

    Raises:
        RecorderUnavailable: nothing listens there, or no answer came within ``timeout``.
    """
    if control.startswith("ipc://") and not os.path.exists(control[6:]):
        raise RecorderUnavailable(f"no answer from {control}: no recorder listens there (the socket does not exist)")
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        if curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
        sock.connect(control)
        sock.send(P.encode(P.StatsRequest()))
        if not sock.poll(int(timeout * 1000)):
            raise RecorderUnavailable(f"no answer from {control} within {timeout:g} s")
        reply = P.decode_control(sock.recv())
    except (msgspec.DecodeError, msgspec.ValidationError, zmq.ZMQError) as e:
        raise RecorderUnavailable(f"no usable answer from {control}: {e}") from e
    finally:
        sock.close()
    if not isinstance(reply, P.StatsReply):
        raise RecorderUnavailable(f"{control} answered a stats request with {type(reply).__name__}")
    stats: dict[str, Any] = msgspec.json.decode(reply.body)
    return stats
