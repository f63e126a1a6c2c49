"""The producer-side Client: ``record()`` never touches the disk.

One Client per producer process. ``record()`` encodes the record, stamps it
with this client's producer id and next sequence number, keeps it in a
bounded buffer of unacknowledged records and, when nothing is in flight,
pushes it at once. Records that come while others await their
acknowledgement are coalesced: a background thread sends them as one frame
when the acknowledgement arrives, or after at most ``COALESCE_S``. That
thread also reads acknowledgements (the durable watermark), pings the
recorder, and resends what is unacknowledged when the recorder restarts or
reports a gap.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from typing import Any

import msgspec
import zmq
from pydantic import BaseModel

from . import protocol as P
from .schema._ids import holds_record_id, new_record_id
from .schema.endpoints import endpoints
from .schema.config import load_config
from .exceptions import (
    ClientClosed,
    RecorderError,
    RecorderUnavailable,
    RecordTooLarge,
    RejectedError,
    ValidationError,
)
from .schema.validation import encode_record

__all__ = ["Client", "load_curve"]

_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_log = logging.getLogger("recorder.client")
STALL_S = 2.0  # unacknowledged this long while the recorder answers pings: send again
COALESCE_S = 0.001  # a record that waits for company is sent after at most this long
_DEFAULT_MAX_FRAME = (1 << 20) + 4096  # until the recorder's Welcome announces its own
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def load_curve(server_public: str | None, client_secret: str | None) -> tuple[bytes, bytes, bytes]:
    """(server public, client public, client secret) keys from certificate files."""
    import zmq.auth

    if not (server_public and client_secret):
        raise RecorderError("CURVE needs both curve_server_public and curve_client_secret")
    try:
        server, _ = zmq.auth.load_certificate(server_public)
        public, secret = zmq.auth.load_certificate(client_secret)
    except (OSError, ValueError) as e:
        raise RecorderError(f"cannot load a CURVE certificate: {e}") from e
    if secret is None:
        raise RecorderError(f"{client_secret}: not a secret certificate (use the .key_secret file)")
    return server, public, secret


def _after_fork_in_child() -> None:
    for c in list(_clients):
        c._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _report_unacknowledged() -> None:
    """At interpreter exit, say how many records no recorder acknowledged: never lose them silently."""
    for c in list(_clients):
        if c.pending:
            _log.warning("%d record(s) not acknowledged by the recorder at %s%s at exit: they may be lost "
                         "(call flush() or close() before exiting)", c.pending, c.endpoint,
                         f" (data root {c.data_root})" if c.data_root else "")


class Client:
    """Hands records to a recorder; one per producer process, safe across threads.

    Args:
        endpoint: the recorder's ingress endpoint; by default derived from
            ``config`` and ``data_root`` exactly as the recorder derives it.
        control: the recorder's control endpoint (acks); derived likewise.
        config: registry TOML used for defaults and for naming model classes.
        data_root: the recorder's data root (to derive default endpoints).
        user_id, session_id, source: default metadata for every record.
        max_pending: how many unacknowledged records are kept for resending.
        block: when the buffer is full, block up to ``timeout`` (True) or
            raise RecorderUnavailable at once (False).
        timeout: seconds ``record()`` may block on a full buffer.
        max_record_bytes: records larger than this are refused here, typed.
        curve_server_public: the recorder's public certificate (``server.key``)
            for a CURVE-protected TCP endpoint; needs ``curve_client_secret``.
        curve_client_secret: this producer's secret certificate
            (``NAME.key_secret``, made by ``recorder keygen``), whose public
            half the recorder lists in its ``curve_clients_dir``.
        connect_timeout: seconds a waiting call (``flush``, ``wait=True``)
            gives a recorder that has never answered before it says so.

    Raises:
        RecorderError: a CURVE certificate cannot be loaded.
    """

    def __init__(self, endpoint: str | None = None, control: str | None = None, *,
                 config: str | None = None, data_root: str | None = None,
                 user_id: str | None = None, session_id: str | None = None, source: str | None = None,
                 max_pending: int = 100_000, block: bool = True, timeout: float = 10.0,
                 max_record_bytes: int | None = None,
                 curve_server_public: str | None = None, curve_client_secret: str | None = None,
                 connect_timeout: float = 5.0) -> None:
        cfg = load_config(config)
        #: the data root the endpoints were derived from (None when both were given)
        self.data_root: str | None = None
        if endpoint is None or control is None:
            self.data_root = os.path.realpath(str(data_root or cfg.recorder.data_root))
            ep = endpoints(cfg, data_root or cfg.recorder.data_root)
            endpoint, control = endpoint or ep.ingress, control or ep.control
        self.endpoint = endpoint
        self.control_endpoint = control
        self.defaults = {"user_id": user_id, "session_id": session_id, "source": source}
        self.max_pending = max_pending
        self.block = block
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_record_bytes = max_record_bytes or cfg.recorder.max_message_bytes
        self._config = config
        self._types: dict[type, str] | None = None
        self._curve: tuple[bytes, bytes, bytes] | None = None
        if curve_server_public or curve_client_secret:
            self._curve = load_curve(curve_server_public, curve_client_secret)
        self._reset()
        _clients.add(self)

    def _reset(self) -> None:
        # Also run in a child after fork: a new producer with an empty buffer,
        # so the child's records are neither dropped as duplicates nor mixed
        # with the parent's. The parent's sockets are abandoned, not closed.
        self.producer = "p" + uuid.uuid4().hex
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._next = 1
        self._acked = 0
        self._pending: deque[tuple[int, bytes, int]] = deque()  # (pseq, frame, record() time ns)
        self._unsent_from = 0  # lowest pseq not yet handed to ZeroMQ (0: none)
        self._rejections: dict[int, tuple[str, str, str]] = {}
        self._epoch = 0
        self._ctx: zmq.Context[Any] | None = None
        self._push_sock: zmq.Socket[Any] | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._answered = False  # a recorder has answered this client at least once
        self._last_hello = 0.0
        self._auth_error = ""  # set when a CURVE handshake is refused
        self._last_stall_resend = 0.0
        self._wakeup = -1  # an eventfd: record() wakes the I/O thread when records wait for company
        self._flush_at = 0.0  # monotonic time by which waiting records are sent (0: none waiting)
        self._max_frame = min(_DEFAULT_MAX_FRAME, self.max_record_bytes + 4096)
        self.latencies_ns: deque[int] = deque(maxlen=200_000)  # record() -> durable ack
        #: sent: records; frames: ZeroMQ frames pushed (a frame holds one record or a batch);
        #: blocked: record() calls that waited for room, blocked_s: how long in all
        self.counters: dict[str, float] = {"sent": 0, "acked": 0, "rejected": 0, "resent": 0, "frames": 0,
                                           "blocked": 0, "blocked_s": 0.0}

    # -- public API --------------------------------------------------------
    def record(self, obj: BaseModel | dict[str, Any] | bytes, *, schema_type: str | None = None,
               user_id: str | None = None, session_id: str | None = None, source: str | None = None,
               action_id: str | None = None, tags: dict[str, str] | None = None,
               schema_version: str | None = None, record_id: str | None = None,
               wait: bool = False, timeout: float | None = None) -> int:
        """Send one record; returns its receipt (the producer sequence number).

        Returns at once (no disk I/O here) unless ``wait=True``, which also
        waits until the record is durable or rejected. A record without a
        ``record_id`` (none in the record, none given) gets a new UUID here,
        once; a missing ``schema_version`` is filled by the recorder from the
        type's ``default_version``, where the registry sets one.

        Raises:
            ValidationError: the record cannot be encoded or has no schema type.
            RecordTooLarge: larger than ``max_record_bytes``.
            RecorderUnavailable: the buffer is full and stayed full (or block=False).
            RejectedError: with ``wait=True``, the recorder refused the record.
            ClientClosed: the client was closed.
        """
        if self._closed:
            raise ClientClosed(f"record() on a closed Client (recorder at {self.endpoint}): nothing would deliver it")
        t0 = time.time_ns()
        stype = schema_type or self._type_of(obj)
        raw = encode_record(obj, stype)
        if len(raw) > self.max_record_bytes:
            raise RecordTooLarge(stype, len(raw), self.max_record_bytes)
        if record_id is None and not holds_record_id(obj, raw):
            record_id = new_record_id()  # made once: the frame kept for resending carries it
        with self._cond:
            self._ensure_started()
            if len(self._pending) >= self.max_pending:
                self._wait_for_room()
            pseq = self._next
            self._next += 1
            frame = P.encode(P.Record(
                self.producer, pseq, stype, raw, schema_version, record_id,
                # an explicit "" is sent as given, so the recorder refuses it as empty
                user_id if user_id is not None else self._default(obj, "user_id"),
                session_id if session_id is not None else self._default(obj, "session_id"),
                source if source is not None else self._default(obj, "source"),
                action_id, tags))
            if len(frame) > self.max_record_bytes + 4096:  # metadata (tags) count toward the frame cap
                self._next -= 1
                raise RecordTooLarge(stype, len(frame), self.max_record_bytes)
            self._pending.append((pseq, frame, t0))
            self.counters["sent"] += 1
            if not self._unsent_from:
                if self._acked >= pseq - 1:  # nothing in flight: no reason to wait
                    self._push(pseq, frame)
                else:  # wait for the acknowledgement (or COALESCE_S) and go with the others
                    self._unsent_from = pseq
                    os.eventfd_write(self._wakeup, 1)
        if wait:
            self._wait_acked(pseq, self.timeout if timeout is None else timeout)
            self._raise_rejections(pseq, pseq)
        return pseq

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is durable or rejected.

        Raises:
            RecorderUnavailable: not all were acknowledged within ``timeout``.
            RejectedError: some were refused (each with its reason).
        """
        with self._lock:
            target = self._next - 1
        self._wait_acked(target, self.timeout if timeout is None else timeout)
        self._raise_rejections(0, target)

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to ``timeout``), then close the sockets.

        Raises:
            RecorderUnavailable: records were still unacknowledged (they may be lost).
        """
        try:
            if self._thread is not None:
                self._wait_acked(self._next - 1, timeout)
        finally:
            self._closing = self._closed = True
            if self._thread is not None:
                self._thread.join(timeout=2)
            with self._lock:
                if self._push_sock is not None:
                    self._push_sock.close(linger=0)
                if self._ctx is not None:
                    self._ctx.term()
                if self._wakeup >= 0:
                    os.close(self._wakeup)
                    self._wakeup = -1
                self._push_sock = self._ctx = self._thread = None
            _clients.discard(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Flush and close on a clean exit; with an exception propagating, log what is unacknowledged
        and close without waiting, never masking the original."""
        if exc_type is None:
            self.close()
            return
        if self.pending:
            _log.warning("%d record(s) not acknowledged by the recorder at %s while leaving the Client "
                         "on %s: they may be lost", self.pending, self.endpoint, exc_type.__name__)
        try:
            self.close(timeout=0)
        except RecorderError:
            pass  # already said; the original exception goes on

    @property
    def pending(self) -> int:
        """Records sent but not yet acknowledged."""
        return len(self._pending)

    @property
    def acked(self) -> int:
        """The durable watermark: every record up to this receipt is durable or rejected."""
        return self._acked

    # -- internals ---------------------------------------------------------
    def _type_of(self, obj: Any) -> str:
        if isinstance(obj, BaseModel):
            if self._types is None:
                from .schema.registry import Registry

                reg = Registry.from_config(load_config(self._config))
                self._types = {m: name for name, s in reg.specs.items() for _, m in s.models}
            name = self._types.get(type(obj))
            if name is not None:
                return name
        raise ValidationError(type(obj).__name__, "schema_type", "cannot infer the schema type: pass schema_type=")

    def _default(self, obj: Any, name: str) -> str | None:
        # A record's own field wins over the client's default; only explicit
        # per-call metadata must agree with it.
        own = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        return None if own is not None else self.defaults[name]

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ctx = zmq.Context()
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a recorder that is not there
        push.setsockopt(zmq.SNDHWM, 10_000)
        push.setsockopt(zmq.RECONNECT_IVL, 50)
        push.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        self._apply_curve(push)
        push.connect(self.endpoint)
        self._push_sock = push
        self._thread = threading.Thread(target=self._io_loop, name="recorder-client", daemon=True)
        self._thread.start()

    def _push(self, pseq: int, frame: bytes) -> bool:
        """Hand one frame to ZeroMQ; if it has no room, remember to send from ``pseq`` later (lock held)."""
        assert self._push_sock is not None
        try:
            self._push_sock.send(frame, zmq.NOBLOCK)
            self.counters["frames"] += 1
            return True
        except zmq.Again:
            self._unsent_from = pseq  # sent, in order, when the recorder is back
            return False

    def _send_from(self, start: int, again: bool = False) -> None:
        """Push every pending record from ``start`` on, grouped into frames under the recorder's limit
        (lock held). ``again``: they were sent before (a resend)."""
        self._unsent_from = 0
        self._flush_at = 0.0
        if not self._pending:
            return
        first = self._pending[0][0]
        group: list[bytes] = []
        size = 0
        group_start = 0
        for pseq, frame, _t in itertools.islice(self._pending, max(0, start - first), None):
            if group and size + len(frame) > self._max_frame - 64:
                if not self._push(group_start, group[0] if len(group) == 1 else P.encode_batch(group)):
                    return
                group, size = [], 0
            if not group:
                group_start = pseq
            group.append(frame)
            size += len(frame)
            if again:
                self.counters["resent"] += 1
        if group:
            self._push(group_start, group[0] if len(group) == 1 else P.encode_batch(group))

    def _resend(self, start: int) -> None:
        """Push every pending record from ``start`` on again (lock held)."""
        self._send_from(start, again=True)

    def _wait_for_room(self) -> None:
        self.counters["blocked"] += 1
        if not self.block:
            raise RecorderUnavailable(f"{len(self._pending)} records unacknowledged (max_pending reached)")
        start = time.monotonic()
        deadline = start + self.timeout
        try:
            while len(self._pending) >= self.max_pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RecorderUnavailable(
                        f"recorder at {self.endpoint} did not acknowledge in {self.timeout} s "
                        f"({len(self._pending)} records pending)")
                self._cond.wait(left)
        finally:
            self.counters["blocked_s"] += time.monotonic() - start

    def _wait_acked(self, target: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        start = time.monotonic()
        with self._cond:
            while self._acked < target:
                now = time.monotonic()
                left = deadline - now
                if self._auth_error and left <= timeout - 0.5:
                    raise RecorderUnavailable(self._auth_error)
                if not self._answered and now - start >= min(self.connect_timeout, timeout):
                    where = f" for data root {self.data_root}" if self.data_root else ""
                    raise RecorderUnavailable(
                        f"no recorder answered at {self.control_endpoint} (ingress {self.endpoint}){where} "
                        f"within {min(self.connect_timeout, timeout):g} s: is `recorder run` running there?")
                if left <= 0:
                    raise RecorderUnavailable(
                        f"the recorder at {self.endpoint} stopped acknowledging: up to #{self._acked}, "
                        f"not #{target}, within {timeout} s")
                self._cond.wait(min(left, 0.05 if not self._answered else 0.5))

    def _raise_rejections(self, low: int, high: int) -> None:
        with self._lock:
            found = sorted(p for p in self._rejections if low <= p <= high)
            if not found:
                return
            rej = [(p, *self._rejections.pop(p)) for p in found]
        raise RejectedError(rej)

    # -- the I/O thread ------------------------------------------------------
    def _io_loop(self) -> None:
        assert self._ctx is not None
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, self.producer.encode())
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        dealer.setsockopt(zmq.RECONNECT_IVL, 50)
        dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        self._apply_curve(dealer)
        # A refused CURVE handshake is silent in ZeroMQ: watch for it, so the
        # producer hears "authentication failed" rather than only a timeout.
        monitor = dealer.get_monitor_socket(_HANDSHAKE_EVENTS)
        dealer.connect(self.control_endpoint)
        hello = P.encode(P.Hello(self.producer, 0, os.getpid(), socket.gethostname()))
        ping = P.encode(P.Ping(self.producer))
        self._send(dealer, hello)
        last_ping = time.monotonic()
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._wakeup, zmq.POLLIN)
        try:
            while not self._closing:
                wait_ms = 20
                if self._flush_at:
                    wait_ms = max(0, math.ceil((self._flush_at - time.monotonic()) * 1000))
                ready = dict(poller.poll(wait_ms))
                if self._wakeup in ready:
                    try:
                        os.eventfd_read(self._wakeup)
                    except BlockingIOError:
                        pass
                    with self._lock:
                        if self._unsent_from and not self._flush_at:
                            self._flush_at = time.monotonic() + COALESCE_S
                if monitor in ready:
                    self._on_monitor(monitor)
                if dealer in ready:
                    while True:
                        try:
                            data = dealer.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_control(dealer, data)
                if self._flush_at and time.monotonic() >= self._flush_at:
                    with self._lock:
                        if self._unsent_from:
                            self._send_from(self._unsent_from)
                        self._flush_at = 0.0
                now = time.monotonic()
                if self._pending and now - last_ping > 0.2:
                    last_ping = now
                    self._send(dealer, ping)
        finally:
            dealer.disable_monitor()
            monitor.close(linger=0)
            dealer.close(linger=0)

    def _on_monitor(self, monitor: zmq.Socket[Any]) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                ev = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            with self._cond:
                if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._auth_error = ""
                else:
                    self._auth_error = (f"the recorder at {self.control_endpoint} refused the connection "
                                        f"(CURVE authentication failed, or a key is wrong or missing)")
                self._cond.notify_all()

    def _apply_curve(self, sock: zmq.Socket[Any]) -> None:
        if self._curve is not None:
            server, public, secret = self._curve
            sock.curve_serverkey = server
            sock.curve_publickey = public
            sock.curve_secretkey = secret

    def _send(self, dealer: zmq.Socket[Any], data: bytes) -> None:
        try:
            dealer.send(data, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected yet: the next ping tries again

    def _hello(self, dealer: zmq.Socket[Any]) -> None:
        now = time.monotonic()
        if now - self._last_hello > 0.05:
            self._last_hello = now
            self._send(dealer, P.encode(P.Hello(self.producer, self._acked, os.getpid(), socket.gethostname())))

    def _on_control(self, dealer: zmq.Socket[Any], data: bytes) -> None:
        try:
            msg = P.decode_control(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # a garbled frame must not kill the I/O thread
        with self._cond:
            self._answered = True
            if isinstance(msg, P.Welcome):
                if msg.expected == 0:
                    self._hello(dealer)
                    return
                # A Welcome answers our Hello: the recorder may have lost what
                # sat in a dead socket, so everything from `expected` goes again
                # (it drops what it already has).
                self._epoch = msg.epoch
                if msg.max_frame:
                    self._max_frame = min(msg.max_frame, self.max_record_bytes + 4096)
                self._apply_watermark(msg.watermark)
                self._resend(max(msg.expected, self._acked + 1))
            elif isinstance(msg, P.Ack):
                if self._epoch and msg.epoch != self._epoch:
                    self._hello(dealer)  # a new recorder: re-introduce, then resend
                for pseq, code, fld, reason in msg.rejections:
                    self._rejections[pseq] = (code, fld, reason)
                    self.counters["rejected"] += 1
                if not self._epoch:
                    self._epoch = msg.epoch
                moved = msg.watermark > self._acked
                self._apply_watermark(msg.watermark)
                if self._unsent_from:
                    self._send_from(self._unsent_from)  # what waited for this acknowledgement goes now
                elif not moved and self._stalled():
                    # The recorder answered but is not progressing on what we sent:
                    # a lost frame or a lost Nack. Resending is safe (it drops duplicates).
                    self._resend(self._acked + 1)
            elif isinstance(msg, P.Nack):
                if msg.expected == 0 or msg.epoch != self._epoch:
                    self._hello(dealer)
                else:
                    self._resend(msg.expected)

    def _stalled(self) -> bool:
        now = time.monotonic()
        if not self._pending or now - self._last_stall_resend < STALL_S:
            return False
        if time.time_ns() - self._pending[0][2] < STALL_S * 1e9:
            return False
        self._last_stall_resend = now
        return True

    def _apply_watermark(self, watermark: int) -> None:
        if watermark <= self._acked:
            return
        now = time.time_ns()
        while self._pending and self._pending[0][0] <= watermark:
            _pseq, _frame, t0 = self._pending.popleft()
            self.latencies_ns.append(now - t0)
            self.counters["acked"] += 1
        self._acked = watermark
        self._cond.notify_all()
