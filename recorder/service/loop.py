"""The ingest loop: one thread owns the sockets, the producers' bookkeeping and the accept step.

It drains ingress frames without blocking, de-duplicates by producer
sequence, runs each record's accept step, and appends what passes to its
type's writer actor (one lock per actor per pass, no per-record queue).
The actors' sync threads write and fdatasync; when a batch is durable the
loop sends one acknowledgement per producer. Memory is bounded: above
``BUFFER_BYTES`` accepted and not yet durable, the loop stops reading
ingress, ZeroMQ's queues (``INGRESS_HWM`` frames per producer) fill, and
producers block or raise ``RecorderUnavailable``.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psutil
import zmq
import zmq.auth

from ..storage import INTERNAL_DIR, _durable
from .. import protocol as P
from ..schema.endpoints import Endpoints
from ..storage.dedup import CHECKPOINT_S, DurableIndex
from ..exceptions import RecorderError, RecordTooLarge, UnknownSchemaError, ValidationError
from ..store import Store
from ..storage.writer import Entry
from .actor import BATCH_BOUNDS, LATENCY_BOUNDS_NS, MAX_BATCH_BYTES, Done, EndSession, WriterActor

__all__ = ["BUFFER_BYTES", "INGRESS_HWM", "IngestLoop"]

_PRODUCER = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_SEQ = 2**62  # producer sequences stay far inside msgpack's 64-bit integers
BUFFER_BYTES = 8 << 20  # record bytes accepted and not yet durable, over all types, before ingress pauses
INGRESS_HWM = 8  # frames ZeroMQ queues per producer while the loop is not reading
FRAME_OVERHEAD = 4096  # a frame may exceed max_message_bytes by this much (the records' metadata)
DRAIN_FRAMES = 256  # frames taken per pass before the loop looks at acknowledgements again ...
DRAIN_BYTES = 4 << 20  # ... or bytes
PRODUCER_TTL_S = 3600.0  # idle producers with nothing pending are forgotten after this
UNREGISTERED = "(unregistered)"  # the schema_type label of records of an unknown type
STAGES = ("receive", "admit", "accept", "ack")
_log = logging.getLogger("recorder.service")


def percentiles(samples: list[int], ps: tuple[float, ...] = (50, 99, 99.9)) -> dict[str, float]:
    """Milliseconds at the given percentiles of nanosecond samples, and the max."""
    if not samples:
        return {}
    s = sorted(samples)
    return {f"p{p:g}": s[min(len(s) - 1, int(len(s) * p / 100))] / 1e6 for p in ps} | {"max": s[-1] / 1e6}


@dataclass(slots=True)
class _Producer:
    """What the recorder knows of one producer (by producer id)."""

    watermark: int  # highest contiguous pseq that is durable or rejected
    next: int  # next pseq to take; lower ones are duplicates
    done: set[int] = field(default_factory=set)  # finished pseqs above the watermark
    on_disk: set[int] = field(default_factory=set)  # found in the files' tails at start, not yet re-sent
    durable: list[list[int]] = field(default_factory=list)  # durable pseq intervals (the restart index)
    rejections: list[tuple[int, str, str, str]] = field(default_factory=list)
    last_seen: float = 0.0
    nacked: int = -1  # the 'expected' value last sent in a Nack, to send it once


class IngestLoop:
    """Receives frames, accepts records into actors, sends acknowledgements."""

    def __init__(self, store: Store, ep: Endpoints, restarts: int = 0) -> None:
        self.store = store
        self.ep = ep
        self.restarts = restarts
        self.epoch = time.time_ns()
        self.started = time.monotonic()
        self.max_msg = store.config.recorder.max_message_bytes
        self.producers: dict[str, _Producer] = {}
        self.stopping = False
        self.fatal = ""  # why the loop stopped with status 3
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, self.max_msg + FRAME_OVERHEAD)  # last guard; clients check first
        self.pull.setsockopt(zmq.RCVHWM, INGRESS_HWM)
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 500)
        self.ctl.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.ctl.setsockopt(zmq.MAXMSGSIZE, 65536)
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # sync threads -> loop: a batch is done
        self.done_q: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self.counters = {"received": 0, "frames": 0, "duplicates": 0, "gaps": 0, "unknown_producer": 0,
                         "bad_frames": 0, "acks_sent": 0, "acks_undeliverable": 0, "ingress_paused": 0}
        #: records refused before reaching a writer: schema type (or UNREGISTERED) -> code -> count
        self.ingress_rejects: dict[str, dict[str, int]] = {}
        self.actors = {name: WriterActor(store, name, self._report) for name in store.writers}
        self.durable = store.durable  # durable pseqs per producer, checkpointed for the next start
        self._checkpointed = time.monotonic()
        self.cpu_ns = dict.fromkeys(STAGES, 0)  # the loop thread's CPU by stage
        self._pending_acks: set[str] = set()  # producers to acknowledge at the end of this pass
        self.proc = psutil.Process()
        self.auth: Any = None

    # -- actor side ------------------------------------------------------
    def _report(self, done: Done) -> None:
        """Called in a sync thread: queue the result and wake the loop."""
        self.done_q.put(done)
        os.eventfd_write(self.wake, 1)

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

    @property
    def buffered(self) -> int:
        return sum(a.buffered for a in self.actors.values())

    def memory_bound(self) -> int:
        """What ingress may hold in this process beyond its baseline, in bytes (docs/RELIABILITY.md).

        ZeroMQ's queue of each producer, the records accepted and not yet
        durable (measured: up to three times their JSON bytes, as decoded
        frames, accepted records and the allocator's slack),
        one pass of frames, and the sync threads' write buffers.
        """
        frame = self.max_msg + FRAME_OVERHEAD
        return (len(self.producers) * INGRESS_HWM * frame + 3 * BUFFER_BYTES + DRAIN_BYTES + frame
                + 2 * MAX_BATCH_BYTES)

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (then drain and return 0) or a fatal error (return 3)."""
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.ctl, zmq.POLLIN)
        poller.register(self.wake, zmq.POLLIN)
        last_housekeeping = time.monotonic()
        reading = True
        while not self.stopping:
            # Bounded memory: while too much is accepted and not yet durable,
            # stop reading; ZeroMQ's queues fill and producers block.
            buffered = self.buffered
            if reading and buffered > BUFFER_BYTES:
                poller.unregister(self.pull)
                reading = False
                self.counters["ingress_paused"] += 1
            elif not reading and buffered < BUFFER_BYTES // 2:
                poller.register(self.pull, zmq.POLLIN)
                reading = True
            events = dict(poller.poll(100 if reading else 5))
            if self.pull in events:
                self._drain_ingress(DRAIN_FRAMES)
            if self.ctl in events:
                self._drain_control()
            if self.wake in events or not self.done_q.empty():
                if self._drain_done():
                    return 3
            now = time.monotonic()
            if self.durable.dirty and now - self._checkpointed >= CHECKPOINT_S and self._checkpoint(now):
                return 3  # a batch drained for the checkpoint reported a fatal error
            if now - last_housekeeping > 5:
                last_housekeeping = now
                self._expire(now)
        return self._stop()

    def _stop(self) -> int:
        # Graceful stop: take what already arrived, let every actor write and
        # sync it, acknowledge, then close files with their checkpoints.
        while self._drain_ingress(DRAIN_FRAMES) == DRAIN_FRAMES:
            pass
        for a in self.actors.values():
            a.stop()
        for a in self.actors.values():
            a.join(timeout=30)
        fatal = self._drain_done()
        self._drain_control()
        if not fatal:
            fatal = self._checkpoint(time.monotonic())
        self.store.close()
        self.close_sockets()
        return 3 if fatal else 0

    def _checkpoint(self, now: float) -> bool:
        """Write the durable index with the highest seq below which every durable record is in it;
        True if draining the reports met a fatal error (the caller stops, as after any drain).

        That seq is read from the actors before their reports are drained: an
        actor reports a batch before it counts it reported, so every batch at
        or below it is in the index by the time it is written.
        """
        self._checkpointed = now
        upto = self.store.seq.next - 1
        for a in self.actors.values():
            if a.submitted_upto > a.reported_upto:
                upto = min(upto, a.reported_upto)
        if self._drain_done():
            return True  # fatal: the caller stops; the next start reads the files back from the last checkpoint
        try:
            self.durable.save(self.store.state_fd, upto)
        except RecorderError as e:
            self.store.event("checkpoint_failed", {"path": f"{INTERNAL_DIR}/state/producers.json", "error": str(e)})
        return False

    def close_sockets(self) -> None:
        for s in (self.pull, self.ctl):
            s.close()
        os.close(self.wake)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    # -- ingress ---------------------------------------------------------
    def _drain_ingress(self, limit: int) -> int:
        """Take up to ``limit`` frames; returns how many were taken."""
        t0 = time.thread_time_ns()
        records: list[P.Record] = []
        n = nbytes = 0
        while n < limit and nbytes < DRAIN_BYTES:
            try:
                data = self.pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            nbytes += len(data)
            self._decode(data, records)
        if not n:
            return 0
        received = time.time_ns()
        self.counters["frames"] += n
        self.counters["received"] += len(records)
        t1 = time.thread_time_ns()
        admitted = [(r, a, self.store.seq.take()) for r in records if (a := self._admit(r)) is not None]
        t2 = time.thread_time_ns()
        work: dict[WriterActor, tuple[list[Entry | EndSession], list[int]]] = {}
        for r, actor, seq in admitted:
            try:
                entry = actor.accept(r, seq, received)
            except ValidationError as e:
                actor.count_reject(e.code)
                self._refuse(r, e)
                continue
            w = work.get(actor)
            if w is None:
                w = work[actor] = ([], [0])
            w[0].append(entry)
            w[1][0] += len(r.record)
        for actor, (items, size) in work.items():
            actor.submit(items, size[0])
        t3 = time.thread_time_ns()
        self._send_pending_acks()
        t4 = time.thread_time_ns()
        cpu = self.cpu_ns
        cpu["receive"] += t1 - t0
        cpu["admit"] += t2 - t1
        cpu["accept"] += t3 - t2
        cpu["ack"] += t4 - t3
        return n

    def _decode(self, data: bytes, out: list[P.Record]) -> None:
        try:
            frame = P.decode_ingress(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self.counters["bad_frames"] += 1
            self.counters["received"] += 1  # received counts records, and each frame that holds none
            bad = ValidationError("?", "$", f"not a record frame: {e}")
            self.store.reject("?", data, bad, "?", 0, "wire")  # the quarantine bounds its copy
            return
        if isinstance(frame, P.Batch):
            out.extend(frame.records)
        else:
            out.append(frame)

    def _admit(self, r: P.Record) -> WriterActor | None:
        """Producer bookkeeping of one record: the actor to accept it, or None (duplicate, gap, refused)."""
        _durable.fault("after_receive")
        st = self.producers.get(r.producer)  # a known producer's id was checked when it was first seen
        if (st is None and not _PRODUCER.fullmatch(r.producer)) or not 0 < r.pseq < _MAX_SEQ:
            self.counters["bad_frames"] += 1
            bad = ValidationError(r.schema_type[:64], "producer",
                                  "producer id must match [A-Za-z0-9._-]{1,64} and pseq lie in 1..2**62")
            self.store.reject(r.schema_type[:64], r.record, bad, "?", r.pseq, "wire")
            return None
        if st is None:
            if r.pseq != 1:  # restarted recorder, or a frame overtook the Hello
                self.counters["unknown_producer"] += 1
                self._send(r.producer, P.Nack(self.epoch, 0))
                return None
            st = self._new_producer(r.producer, 0)
        st.last_seen = time.monotonic()
        if r.pseq < st.next:
            self.counters["duplicates"] += 1
            if r.pseq <= st.watermark:
                self._pending_acks.add(r.producer)
            return None
        if r.pseq > st.next:
            self.counters["gaps"] += 1
            if st.nacked != st.next and self._send(r.producer, P.Nack(self.epoch, st.next)):
                st.nacked = st.next  # once per gap; an undelivered Nack is tried again on the next frame
            return None
        st.next += 1
        if r.pseq in st.on_disk or (st.durable and DurableIndex.covers(st.durable, r.pseq)):
            # durable before (a crash, or a producer forgotten and back); its ack was lost
            st.on_disk.discard(r.pseq)
            self.counters["duplicates"] += 1
            self._finish(st, r.pseq, None)
            self._pending_acks.add(r.producer)
            return None
        actor = self.actors.get(r.schema_type)
        if actor is None or len(r.record) > self.max_msg:
            err: ValidationError = UnknownSchemaError(r.schema_type[:64], "schema_type", "not registered")
            if actor is not None:
                err = RecordTooLarge(r.schema_type, len(r.record), self.max_msg)
            by_code = self.ingress_rejects.setdefault(r.schema_type if actor is not None else UNREGISTERED, {})
            by_code[err.code] = by_code.get(err.code, 0) + 1
            self._refuse(r, err)
            return None
        return actor

    def _refuse(self, r: P.Record, err: ValidationError) -> None:
        """Quarantine a refused record and count it finished for its producer."""
        self.store.reject(r.schema_type, r.record, err, r.producer, r.pseq, "wire")
        st = self.producers.get(r.producer)
        if st is not None:
            self._finish(st, r.pseq, (err.code, err.field, err.reason))
            self._pending_acks.add(r.producer)

    def _new_producer(self, producer: str, acked: int) -> _Producer:
        found = {p for p in self.store.on_disk.pop(producer, set()) if p > acked}
        st = _Producer(watermark=acked, next=acked + 1, on_disk=found, durable=self.durable.of(producer),
                       last_seen=time.monotonic())
        self.producers[producer] = st
        return st

    # -- completions and acks -------------------------------------------
    def _drain_done(self) -> bool:
        t0 = time.thread_time_ns()
        try:
            os.eventfd_read(self.wake)  # first: a batch reported after this wakes the next poll
        except BlockingIOError:
            pass
        fatal = False
        while True:
            try:
                done = self.done_q.get_nowait()
            except queue.Empty:
                break
            if done.fatal is not None:
                _log.error("fatal: %s", done.fatal, extra={"fields": {"schema_type": done.schema_type}})
                self.fatal = f"{done.schema_type}: {done.fatal}"
                fatal = True
            for user_id, session_id in done.ended:
                end = EndSession(user_id, session_id)
                for a in self.actors.values():
                    a.submit([end], 0)
            producers = self.producers
            touched = self._pending_acks
            add = self.durable.add
            for producer, pseq in done.durable:
                add(producer, pseq)
                st = producers.get(producer)
                if st is not None:
                    if pseq == st.watermark + 1 and not st.done:
                        st.watermark = pseq  # the common case: in order, nothing above
                    else:
                        self._finish(st, pseq, None)
                    touched.add(producer)
            for producer, pseq, code, fld, reason in done.rejected:
                st = producers.get(producer)
                if st is not None:
                    self._finish(st, pseq, (code, fld, reason))
                    touched.add(producer)
        self._send_pending_acks()
        self.cpu_ns["ack"] += time.thread_time_ns() - t0
        return fatal

    def _send_pending_acks(self) -> None:
        for producer in self._pending_acks:
            st = self.producers.get(producer)
            if st is not None:
                self._ack(producer, st)
        self._pending_acks.clear()

    def _finish(self, st: _Producer, pseq: int, rejection: tuple[str, str, str] | None) -> None:
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
            self._send(msg.producer, P.Welcome(self.epoch, st.watermark, st.next, self.max_msg + FRAME_OVERHEAD))
            if st.rejections:
                self._ack(msg.producer, st)
        elif isinstance(msg, P.Ping):
            st2 = self.producers.get(msg.producer)
            if st2 is None:
                self._send(msg.producer, P.Welcome(self.epoch, 0, 0, self.max_msg + FRAME_OVERHEAD))
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
            w = a.writer
            types[name] = {
                "records": a.records, "bytes": a.bytes, "rejects": a.rejects, "batches": a.batches,
                "batch_mean": round(sum(sizes) / len(sizes), 2) if sizes else 0,
                "batch_max": max(sizes) if sizes else 0,
                "queue_depth": a.queued,
                "buffered_bytes": a.buffered,
                "ack_latency_ms": percentiles(list(a.latencies_ns)),
                "storage_full": bool(a.full_since),
                # destinations that could not be written, tried again at the time given
                "unwritable": {"refused": w.unwritable_refused,
                               "destinations": {s.replace("\0", "{segment}"): {"error": str(e), "retry_in_s": round(
                                   max(0.0, t - time.monotonic()), 3)} for s, (t, e) in list(w.unwritable.items())}},
                # records taken on the typed fast path, by the reference rules, and those the
                # fast path refused where the reference (pydantic) accepted
                "accept": dict(a.accept_counts),
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
        sync_cpu = sum(a.cpu_ns() for a in self.actors.values())
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
            "buffered_bytes": self.buffered, "memory_bound_bytes": self.memory_bound(),
            "dedup": self.durable.summary(),
            "disk": {"total": disk.total, "used": disk.used, "free": disk.free, "percent": disk.percent},
            "profile": {
                "records": sum(a.records for a in self.actors.values()), "frames": self.counters["frames"],
                "threads_cpu_s": {"loop": round(sum(self.cpu_ns.values()) / 1e9, 6),
                                  "sync": round(sync_cpu / 1e9, 6)},
                "stages_s": {**{k: round(v / 1e9, 6) for k, v in self.cpu_ns.items()},
                             "commit": round(sum(a.commit_cpu_ns for a in self.actors.values()) / 1e9, 6)},
            },
            "types": types,
        }
