"""The recorder process: ingress -> writer actors, durable acknowledgements out.

One thread runs the ZeroMQ sockets (sockets are not thread-safe) and the
per-producer bookkeeping: de-duplication, gap detection and the durable
watermark. Writer actors report finished batches through a queue plus an
inproc wake-up socket. Run as ``python -m recorder.router``; it prints one
``READY {json}`` line on stdout when it accepts records.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import queue
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psutil
import zmq
import zmq.auth

from . import _durable, _logging
from . import protocol as P
from ._run import Endpoints, endpoints, lock_endpoints, release_endpoints
from .actor import BATCH_BOUNDS, LATENCY_BOUNDS_NS, Done, EndSession, WriterActor
from .config import load_config
from .exceptions import RecorderError, RecordTooLarge, UnknownSchemaError, ValidationError
from .registry import Registry
from .store import Store

__all__ = ["Router", "main"]

SWITCH_INTERVAL_S = 0.0002
_PRODUCER = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_SEQ = 2**62  # producer sequences stay far inside msgpack's 64-bit integers
MAX_INBOX = 50_000  # records queued for one actor before ingress pauses
PRODUCER_TTL_S = 3600.0  # idle producers with nothing pending are forgotten after this
UNREGISTERED = "(unregistered)"  # the schema_type label of records of an unknown type
_log = logging.getLogger("recorder.service")


@dataclass
class _Producer:
    """What the recorder knows of one producer (by producer id)."""

    watermark: int  # highest contiguous pseq that is durable or rejected
    next: int  # next pseq to dispatch; lower ones are duplicates
    done: set[int] = field(default_factory=set)  # finished pseqs above the watermark
    on_disk: set[int] = field(default_factory=set)  # found on disk at start, not yet re-sent
    rejections: list[tuple[int, str, str, str]] = field(default_factory=list)
    last_seen: float = 0.0
    nacked: int = -1  # the 'expected' value last sent in a Nack, to send it once


def _percentiles(samples: list[int], ps: tuple[float, ...] = (50, 99, 99.9)) -> dict[str, float]:
    if not samples:
        return {}
    s = sorted(samples)
    return {f"p{p:g}": s[min(len(s) - 1, int(len(s) * p / 100))] / 1e6 for p in ps} | {"max": s[-1] / 1e6}


class Router:
    """Receives frames, routes records to actors, sends acknowledgements."""

    def __init__(self, store: Store, ep: Endpoints, restarts: int = 0) -> None:
        self.store = store
        self.ep = ep
        self.restarts = restarts
        self.epoch = time.time_ns()
        self.started = time.monotonic()
        self.max_msg = store.config.recorder.max_message_bytes
        self.producers: dict[str, _Producer] = {}
        self.stopping = False
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, self.max_msg + 4096)  # last guard; clients check first
        self.pull.setsockopt(zmq.RCVHWM, 100_000)
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 500)
        self.ctl.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.ctl.setsockopt(zmq.MAXMSGSIZE, 65536)
        self.wake = self.ctx.socket(zmq.PULL)
        self.wake.bind("inproc://wake")
        self.done_q: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self.counters = {"received": 0, "duplicates": 0, "gaps": 0, "unknown_producer": 0,
                         "bad_frames": 0, "acks_sent": 0, "acks_undeliverable": 0}
        #: records refused before reaching a writer: schema type (or UNREGISTERED) -> code -> count
        self.ingress_rejects: dict[str, dict[str, int]] = {}
        self.actors = {name: WriterActor(store, name, self._report) for name in store.writers}
        self._wake_push: dict[int, zmq.Socket[bytes]] = {}  # one inproc socket per actor thread
        self.proc = psutil.Process()
        self.auth: Any = None

    # -- actor side ------------------------------------------------------
    def _report(self, done: Done) -> None:
        """Called in an actor thread: queue the result and wake the router."""
        self.done_q.put(done)
        import threading

        ident = threading.get_ident()
        sock = self._wake_push.get(ident)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect("inproc://wake")
            self._wake_push[ident] = sock
        try:
            sock.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass  # the router is already awake with messages queued

    # -- lifecycle -------------------------------------------------------
    def _secure(self) -> None:
        """Make both sockets CURVE servers that admit only the listed client keys."""
        s = self.store.config.recorder
        if not s.curve_server_secret:
            return
        from zmq.auth.thread import ThreadAuthenticator

        try:
            public, secret = zmq.auth.load_certificate(s.curve_server_secret)
        except (OSError, ValueError) as e:
            raise RecorderError(f"{s.curve_server_secret}: cannot load the CURVE server certificate: {e}") from e
        if secret is None:
            raise RecorderError(f"{s.curve_server_secret}: not a secret certificate (use the .key_secret file)")
        if not os.path.isdir(s.curve_clients_dir):
            raise RecorderError(f"{s.curve_clients_dir}: the directory of client public keys does not exist")
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=s.curve_clients_dir)
        for sock in (self.pull, self.ctl):
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True

    def bind(self) -> None:
        """Bind sockets and start the actors; after this the recorder accepts records."""
        self._secure()
        for ep, sock in ((self.ep.ingress, self.pull), (self.ep.control, self.ctl)):
            if ep.startswith("ipc://") and os.path.exists(ep[6:]):
                os.unlink(ep[6:])  # a stale socket of a dead recorder; the endpoint lock is ours
            sock.bind(ep)
        for a in self.actors.values():
            a.start()

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (then drain and return 0) or a fatal error (return 3)."""
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.ctl, zmq.POLLIN)
        poller.register(self.wake, zmq.POLLIN)
        last_housekeeping = time.monotonic()
        reading = True
        while not self.stopping:
            # Bounded inboxes: while an actor is far behind, stop reading
            # ingress; ZeroMQ's queues fill and clients block or buffer.
            backlog = max(a.inbox.qsize() for a in self.actors.values())
            if reading and backlog > MAX_INBOX:
                poller.unregister(self.pull)
                reading = False
            elif not reading and backlog < MAX_INBOX // 2:
                poller.register(self.pull, zmq.POLLIN)
                reading = True
            events = dict(poller.poll(100 if reading else 5))
            if self.pull in events:
                self._drain_ingress(1024)
            if self.ctl in events:
                self._drain_control()
            if self.wake in events or not self.done_q.empty():
                if self._drain_done():
                    return 3
            now = time.monotonic()
            if now - last_housekeeping > 5:
                last_housekeeping = now
                self._expire(now)
        return self._stop()

    def _stop(self) -> int:
        # Graceful stop: take what already arrived, let every actor write and
        # sync it, acknowledge, then close files with their checkpoints.
        self._drain_ingress(1_000_000)
        for a in self.actors.values():
            a.stop()
        for a in self.actors.values():
            a.join(timeout=30)
        fatal = self._drain_done()
        self._drain_control()
        self.store.close()
        self.close_sockets()
        return 3 if fatal else 0

    def close_sockets(self) -> None:
        for s in list(self._wake_push.values()) + [self.pull, self.ctl, self.wake]:
            s.close()
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    # -- ingress ---------------------------------------------------------
    def _drain_ingress(self, limit: int) -> None:
        for _ in range(limit):
            try:
                data = self.pull.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            self._on_record(data)

    def _on_record(self, data: bytes) -> None:
        received = time.time_ns()
        self.counters["received"] += 1
        try:
            r = P.decode_record(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self.counters["bad_frames"] += 1
            bad = ValidationError("?", "$", f"not a record frame: {e}")
            self.store.reject("?", data, bad, "?", 0, "wire")  # the quarantine bounds its copy
            return
        _durable.fault("after_receive")
        if not _PRODUCER.fullmatch(r.producer) or not 0 < r.pseq < _MAX_SEQ:
            self.counters["bad_frames"] += 1
            bad = ValidationError(r.schema_type[:64], "producer",
                                  "producer id must match [A-Za-z0-9._-]{1,64} and pseq lie in 1..2**62")
            self.store.reject(r.schema_type[:64], data, bad, "?", r.pseq, "wire")
            return
        st = self.producers.get(r.producer)
        if st is None:
            if r.pseq != 1:  # restarted recorder, or a frame overtook the Hello
                self.counters["unknown_producer"] += 1
                self._send(r.producer, P.Nack(self.epoch, 0))
                return
            st = self._new_producer(r.producer, 0)
        st.last_seen = time.monotonic()
        if r.pseq < st.next:
            self.counters["duplicates"] += 1
            if r.pseq <= st.watermark:
                self._ack(r.producer, st)
            return
        if r.pseq > st.next:
            self.counters["gaps"] += 1
            if st.nacked != st.next and self._send(r.producer, P.Nack(self.epoch, st.next)):
                st.nacked = st.next  # once per gap; an undelivered Nack is tried again on the next frame
            return
        st.next += 1
        if r.pseq in st.on_disk:  # durable before a crash; its ack was lost
            st.on_disk.discard(r.pseq)
            self.counters["duplicates"] += 1
            self._finish(r.producer, st, r.pseq, None)
            self._ack(r.producer, st)
            return
        actor = self.actors.get(r.schema_type)
        if actor is None or len(r.record) > self.max_msg:
            err: ValidationError = UnknownSchemaError(r.schema_type[:64], "schema_type", "not registered")
            if actor is not None:
                err = RecordTooLarge(r.schema_type, len(r.record), self.max_msg)
            self.store.reject(r.schema_type, r.record, err, r.producer, r.pseq, "wire")
            by_code = self.ingress_rejects.setdefault(r.schema_type if actor is not None else UNREGISTERED, {})
            by_code[err.code] = by_code.get(err.code, 0) + 1
            self._finish(r.producer, st, r.pseq, (err.code, err.field, err.reason))
            self._ack(r.producer, st)
            return
        actor.inbox.put((r, self.store.seq.take(), received))

    def _new_producer(self, producer: str, acked: int) -> _Producer:
        found = {p for p in self.store.on_disk.pop(producer, set()) if p > acked}
        st = _Producer(watermark=acked, next=acked + 1, on_disk=found, last_seen=time.monotonic())
        self.producers[producer] = st
        return st

    # -- completions and acks -------------------------------------------
    def _drain_done(self) -> bool:
        touched: set[str] = set()
        fatal = False
        while True:
            try:
                done = self.done_q.get_nowait()
            except queue.Empty:
                break
            if done.fatal is not None:
                _log.error("fatal: %s", done.fatal, extra={"fields": {"schema_type": done.schema_type}})
                fatal = True
            for user_id, session_id in done.ended:
                for a in self.actors.values():
                    a.inbox.put(EndSession(user_id, session_id))
            for producer, pseq in done.durable:
                st = self.producers.get(producer)
                if st is not None:
                    self._finish(producer, st, pseq, None)
                    touched.add(producer)
            for producer, pseq, code, fld, reason in done.rejected:
                st = self.producers.get(producer)
                if st is not None:
                    self._finish(producer, st, pseq, (code, fld, reason))
                    touched.add(producer)
        try:
            while True:
                self.wake.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass
        for producer in touched:
            self._ack(producer, self.producers[producer])
        return fatal

    def _finish(self, producer: str, st: _Producer, pseq: int, rejection: tuple[str, str, str] | None) -> None:
        if rejection is not None:
            st.rejections.append((pseq, *rejection))
        st.done.add(pseq)
        while st.watermark + 1 in st.done:
            st.watermark += 1
            st.done.discard(st.watermark)

    def _ack(self, producer: str, st: _Producer) -> None:
        if self._send(producer, P.Ack(self.epoch, st.watermark, st.rejections)):
            st.rejections = []

    def _send(self, producer: str, frame: Any) -> bool:
        try:
            data = P.encode(frame)
        except (OverflowError, ValueError, TypeError):
            self.counters["bad_frames"] += 1  # never let one odd producer stop the recorder
            return False
        try:
            self.ctl.send_multipart([producer.encode(), data], zmq.NOBLOCK)
            self.counters["acks_sent"] += 1
            return True
        except zmq.ZMQError:  # not connected (EHOSTUNREACH) or its queue is full
            self.counters["acks_undeliverable"] += 1
            return False

    # -- control ---------------------------------------------------------
    def _drain_control(self) -> None:
        while True:
            try:
                ident, data = self.ctl.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # wrong number of frames: ignore
            try:
                msg = P.decode_control(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.counters["bad_frames"] += 1
                continue
            self._on_control(ident, msg)

    def _on_control(self, ident: bytes, msg: Any) -> None:
        if isinstance(msg, P.StatsRequest):
            body = msgspec.json.encode(self.stats())
            try:
                self.ctl.send_multipart([ident, P.encode(P.StatsReply(body))], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            return
        if isinstance(msg, (P.Hello, P.Ping)) and (not _PRODUCER.fullmatch(msg.producer)
                                                   or (isinstance(msg, P.Hello) and not 0 <= msg.acked < _MAX_SEQ)):
            self.counters["bad_frames"] += 1
            return
        if isinstance(msg, P.Hello):
            st = self.producers.get(msg.producer) or self._new_producer(msg.producer, msg.acked)
            st.last_seen = time.monotonic()
            st.nacked = -1
            self._send(msg.producer, P.Welcome(self.epoch, st.watermark, st.next))
            if st.rejections:
                self._ack(msg.producer, st)
        elif isinstance(msg, P.Ping):
            st2 = self.producers.get(msg.producer)
            if st2 is None:
                self._send(msg.producer, P.Welcome(self.epoch, 0, 0))
            else:
                st2.last_seen = time.monotonic()
                self._ack(msg.producer, st2)

    def _expire(self, now: float) -> None:
        for producer in [p for p, st in self.producers.items()
                         if now - st.last_seen > PRODUCER_TTL_S and not st.done and not st.rejections]:
            del self.producers[producer]

    # -- observability ---------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for ``recorder stats``."""
        types = {}
        for name, a in self.actors.items():
            sizes = list(a.batch_sizes)
            types[name] = {
                "records": a.records, "bytes": a.bytes, "rejects": a.rejects, "batches": a.batches,
                "batch_mean": round(sum(sizes) / len(sizes), 2) if sizes else 0,
                "batch_max": max(sizes) if sizes else 0,
                "queue_depth": a.inbox.qsize(),
                "ack_latency_ms": _percentiles(list(a.latencies_ns)),
                "storage_full": bool(a.full_since),
                # records taken on the typed fast path, by the reference rules, and those the
                # fast path refused where the reference (pydantic) accepted
                "accept": dict(a.accept.counts),
                "rejects_by_code": dict(a.rejects_by_code),
                # since start: count per bucket of the bounds (the last bucket: beyond them)
                "ack_latency_hist": {"bounds_ns": LATENCY_BOUNDS_NS, "counts": list(a.latency_counts),
                                     "sum_ns": a.latency_sum_ns},
                "batch_size_hist": {"bounds": BATCH_BOUNDS, "counts": list(a.batch_counts),
                                    "sum": a.records},
            }
        disk = psutil.disk_usage(self.store.root)
        with self.proc.oneshot():
            cpu = self.proc.cpu_times()
            rss = self.proc.memory_info().rss
        return {
            "pid": os.getpid(), "epoch": self.epoch, "uptime_s": round(time.monotonic() - self.started, 3),
            "restarts": self.restarts, "data_root": self.store.root,
            "endpoints": {"ingress": self.ep.ingress, "control": self.ep.control},
            "producers": len(self.producers), **self.counters,
            "quarantined": self.store.quarantine.count, "quarantine_dropped": self.store.quarantine.dropped,
            "audit_events_dropped": self.store.events_dropped,
            "rejects_at_ingress": {t: dict(c) for t, c in self.ingress_rejects.items()},
            "seal_backlog": self.store.sealer.jobs.qsize(),
            "cpu_s": round(cpu.user + cpu.system, 3), "rss_bytes": rss,
            "disk": {"total": disk.total, "used": disk.used, "free": disk.free, "percent": disk.percent},
            "types": types,
        }


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the supervisor dies, so do we, and the lock is freed.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the recorder process."""
    ap = argparse.ArgumentParser(prog="python -m recorder.router")
    ap.add_argument("--config", help="registry TOML (default: the packaged example)")
    ap.add_argument("--data-root", help="overrides recorder.data_root")
    ap.add_argument("--restarts", type=int, default=0, help="restarts so far (reported in stats)")
    ap.add_argument("--supervised", action="store_true", help="the supervisor holds the endpoint lock")
    ap.add_argument("--log-format", choices=["plain", "json"], help="default: recorder.log_format")
    ap.add_argument("--log-level", choices=list(_logging.LEVELS), help="default: recorder.log_level")
    args = ap.parse_args(argv)
    _logging.configure(args.log_format or "plain", args.log_level or "info")
    if args.supervised:
        _die_with_parent()
        if os.getppid() == 1:
            return 1
    stop = {"flag": False}
    router: Router | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True
        if router is not None:
            router.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The router thread must get the GIL back quickly from a validating actor:
    # with the default 5 ms switch interval every ack waits up to 5 ms more.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    lock: int | None = None
    try:
        config = load_config(args.config)
        if args.log_format is None or args.log_level is None:
            _logging.configure(args.log_format or config.recorder.log_format,
                               args.log_level or config.recorder.log_level)
        root = args.data_root or config.recorder.data_root
        ep = endpoints(config, root)
        Registry.from_config(config)  # models import and paths cannot collide: before anything is created
        if not args.supervised:
            lock = lock_endpoints(ep)
        store = Store(config, data_root=root)
    except RecorderError as e:
        _log.error("%s", e)
        if lock is not None:
            release_endpoints(ep, lock)
        return 2
    router = Router(store, ep, args.restarts)
    router.stopping = stop["flag"]
    try:
        router.bind()
    except (RecorderError, zmq.ZMQError) as e:
        _log.error("%s", e)
        store.close()
        router.close_sockets()
        if lock is not None:
            release_endpoints(ep, lock)
        return 2
    store.event("recorder_ready", {"pid": os.getpid(), "epoch": router.epoch, "restarts": args.restarts})
    ready = {"pid": os.getpid(), "epoch": router.epoch, "ingress": ep.ingress, "control": ep.control,
             "data_root": store.root}
    _log.info("recording into %s: %d types, ingress %s, control %s", store.root, len(router.actors),
              ep.ingress, ep.control, extra={"fields": {"restarts": args.restarts}})
    sys.stdout.write("READY " + msgspec.json.encode(ready).decode() + "\n")
    sys.stdout.flush()
    rc = router.serve()
    if rc == 0:
        _log.info("stopped cleanly: %d records written, %d refused", sum(a.records for a in router.actors.values()),
                  sum(a.rejects for a in router.actors.values()) + sum(
                      n for c in router.ingress_rejects.values() for n in c.values()))
    if lock is not None:
        release_endpoints(ep, lock)
    return rc


if __name__ == "__main__":
    sys.exit(main())
