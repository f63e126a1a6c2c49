"""The ``recorder replay`` and ``recorder recheck`` commands: their sinks, progress line and options."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from ._env import iso_ns
from .exceptions import RecorderError, UsageError

if TYPE_CHECKING:
    from .reading.replay import Replay

__all__ = ["add_commands"]


def _root(args: argparse.Namespace) -> str:
    """The recording: the positional ROOT or --data-root (they must agree); it must be a directory."""
    given = [r for r in (args.root, args.data_root) if r]
    if not given:
        raise UsageError("ROOT", "give the recording's data root (or --data-root)")
    if len(given) == 2 and os.path.realpath(given[0]) != os.path.realpath(given[1]):
        raise UsageError("--data-root", f"{given[1]!r} differs from ROOT {given[0]!r}")
    if not os.path.isdir(given[0]):
        raise UsageError("ROOT", f"{given[0]}: no such directory")
    return str(given[0])


class _StdoutSink:
    """``--to -``: one JSON line per record on stdout, flushed at once (a pipe gets it on time)."""

    def __init__(self) -> None:
        self.out = sys.stdout.buffer

    def wait(self, n: int, timeout: float) -> None:
        pass

    def send(self, topic: str, data: bytes) -> None:
        self.out.write(data + b"\n")
        self.out.flush()

    def close(self, linger_ms: int) -> None:
        self.out.flush()


class _ZmqSink:
    """``--to ENDPOINT``: one message per record, [schema type, JSON], on an XPUB (pub) or PUSH socket.

    XPUB reports each subscription, so ``--wait-subscribers`` starts the
    schedule only once subscribers listen (ZeroMQ's slow joiner), and with
    XPUB_NODROP a subscriber at its high-water mark slows the replay down
    (the schedule error shows it) instead of losing records.
    """

    def __init__(self, endpoint: str, pattern: str, connect: bool, hwm: int) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.pub = pattern == "pub"
        self.sock = self.ctx.socket(zmq.XPUB if self.pub else zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if self.pub:
            self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only the first per topic
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.monitor = None if self.pub else self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sent = 0
        try:
            (self.sock.connect if connect else self.sock.bind)(endpoint)
        except zmq.ZMQError as e:
            self.close(0)
            raise RecorderError(f"--to {endpoint}: cannot {'connect' if connect else 'bind'}: {e}") from e

    def wait(self, n: int, timeout: float) -> None:
        """Return once ``n`` subscriptions (pub) or peers (push) arrived; raises after ``timeout``."""
        from zmq.utils.monitor import recv_monitor_message

        from .exceptions import RecorderUnavailable

        got = 0
        deadline = time.monotonic() + timeout
        while got < n:
            left = deadline - time.monotonic()
            sock = self.sock if self.monitor is None else self.monitor
            if left <= 0 or not sock.poll(int(min(left, 0.2) * 1000) + 1):
                if left <= 0:
                    raise RecorderUnavailable(f"--wait-subscribers: {got} of {n} within {timeout:g} s")
                continue
            if self.monitor is None:
                got += self.sock.recv()[:1] == b"\x01"  # 1: subscribe, 0: unsubscribe
            else:
                recv_monitor_message(self.monitor)
                got += 1

    def send(self, topic: str, data: bytes) -> None:
        zmq = self.zmq
        while True:
            try:
                self.sock.send_multipart([topic.encode(), data], flags=zmq.NOBLOCK)
                break
            except zmq.Again:  # a subscriber (or the PUSH peer) is full or absent: wait, Ctrl-C still works
                self.sock.poll(100, zmq.POLLOUT)
        self.sent += 1
        if self.pub and self.sent % 256 == 0:
            while self.sock.poll(0):
                self.sock.recv()  # later (un)subscriptions

    def close(self, linger_ms: int) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.sock.close(linger=linger_ms)
        self.ctx.term()


class _Live:
    """The replay's progress line on a terminal: records, position, speed, recent schedule error."""

    def __init__(self, enabled: bool, speed: float | None) -> None:
        self.enabled = enabled
        self.speed = "max" if speed is None else f"{speed:g}x"
        self.last = 0.0
        self.seen = 0

    def tick(self, rp: Replay, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.1):
            return
        self.last = now
        window = sorted(rp.stats.samples[self.seen:])
        self.seen = len(rp.stats.samples)
        late = (f"  late p50 {window[len(window) // 2] / 1e6:.2f} p99 {window[int(len(window) * 0.99)] / 1e6:.2f} "
                f"max {rp.stats.max_ns / 1e6:.2f} ms") if window else ""
        at = iso_ns(rp.position_ns) if rp.position_ns is not None else "-"
        sys.stderr.write(f"\rreplay: {rp.count} records  at {at}  {self.speed}{late}   ")
        sys.stderr.flush()


def _summary(rp: Replay, seconds: float) -> str:
    text = f"replay: {rp.count} records from {len(rp.files)} files in {seconds:.1f} s"
    p = rp.stats.percentiles()
    if p:
        text += "; schedule error ms " + "  ".join(f"{k} {v:.3f}" for k, v in p.items())
    return text


def _realtime(priority: int = 10) -> str | None:
    """Put this thread under SCHED_FIFO; None if done, else why not (the replay then plays as a normal thread)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        return f"SCHED_FIFO not available ({e}); it needs CAP_SYS_NICE (root, or setcap cap_sys_nice)"
    return None


def _cmd_replay(args: argparse.Namespace) -> int:
    from .reading.replay import Replay, parse_time

    args.root = _root(args)
    parse_time(args.since, "--since")
    parse_time(args.until, "--until")
    if args.speed is not None and not args.speed > 0:
        raise UsageError("--speed", f"{args.speed:g} must be > 0 (or --max: no waiting)")
    if args.wait_subscribers < 0:
        raise UsageError("--wait-subscribers", "must be >= 0")
    speed = None if args.max else (args.speed or 1.0)
    sink: _StdoutSink | _ZmqSink = (_StdoutSink() if args.to == "-"
                                    else _ZmqSink(args.to, args.pattern, args.connect, args.hwm))
    if args.realtime and speed is not None:
        why = _realtime()
        if why is not None:
            print(f"recorder: --realtime: {why}", file=sys.stderr)
    live = _Live(not args.quiet and sys.stderr.isatty() and not (args.to == "-" and sys.stdout.isatty()), speed)
    rp = None
    t0 = time.monotonic()
    linger = 0
    on_sigint = signal.getsignal(signal.SIGINT)
    try:
        if args.to != "-" and args.wait_subscribers:
            if not args.quiet:
                print(f"replay: waiting for {args.wait_subscribers} subscriber(s) on {args.to} ...", file=sys.stderr)
            sink.wait(args.wait_subscribers, args.wait_timeout)
        while True:
            t0 = time.monotonic()
            rp = Replay(args.root, types=args.type, user=args.user, session=args.session, since=args.since,
                        until=args.until, speed=speed, by=args.by)
            for topic, data in rp.frames(record_only=args.record_only):
                sink.send(topic, data)
                live.tick(rp)
            live.tick(rp, force=True)
            if not args.quiet:
                print(("\n" if live.enabled else "") + _summary(rp, time.monotonic() - t0), file=sys.stderr)
            if not args.loop or rp.count == 0:
                break
        linger = 10_000  # let subscribers take what is queued
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean stop short
        if not args.quiet:
            done = _summary(rp, time.monotonic() - t0) if rp is not None else "replay"
            print(f"\n{done}; stopped (Ctrl-C)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # closing takes up to the linger: not cut short either
        try:
            sink.close(linger)
        finally:
            signal.signal(signal.SIGINT, on_sigint)
    return 0


def _cmd_recheck(args: argparse.Namespace) -> int:
    from ._recheck import check_into, recheck

    args.root = _root(args)
    if args.config and not os.path.isfile(args.config):
        raise RecorderError(f"--config {args.config}: no such file")
    if args.into is not None:
        check_into(args.root, args.into, "--into")
    result = recheck(args.root, args.config, into=args.into, types=args.type, user=args.user,
                     session=args.session, show=args.show, progress=not args.quiet)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(result.to_dict()), indent=2).decode())
    else:
        print("\n".join(result.lines()))
    return 1 if result.failed else 0




def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``replay`` and ``recheck`` through the CLI's ``command(name, help)`` (its shared options)."""
    p = command("replay", "play a recording back in recorder order, at its pace or faster")
    p.add_argument("root", nargs="?", help="data root (or a directory below it); or --data-root")
    p.add_argument("--type", action="append", help="schema type (repeat for several; default: all)")
    p.add_argument("--user", help="user_id")
    p.add_argument("--session", help="session_id")
    p.add_argument("--since", help="from this ISO-8601 UTC time (of --by), inclusive")
    p.add_argument("--until", help="up to this ISO-8601 UTC time (of --by), exclusive")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, help="1 plays at the recorded pace (default), 10 ten times faster")
    pace.add_argument("--max", action="store_true", help="no waiting: as fast as possible")
    p.add_argument("--by", choices=["received", "timestamp"], default="received",
                   help="schedule by the recorder's receive time (default) or the record's own timestamp")
    p.add_argument("--to", default="-", help="ZeroMQ endpoint (bound; see --connect), or - for JSON lines "
                                             "on stdout (default)")
    p.add_argument("--pattern", choices=["pub", "push"], default="pub",
                   help="pub (default): topic = schema type, subscribers filter; push: to PULL peers")
    p.add_argument("--connect", action="store_true", help="connect to --to instead of binding it")
    p.add_argument("--wait-subscribers", type=int, default=1, metavar="N",
                   help="start once N subscriptions (pub) or peers (push) arrived (default 1; 0: at once)")
    p.add_argument("--wait-timeout", type=float, default=60.0, metavar="S", help="for --wait-subscribers")
    p.add_argument("--hwm", type=int, default=100_000, help="messages queued per peer before the replay waits")
    p.add_argument("--record-only", action="store_true", help="send the record's bytes, not the envelope")
    p.add_argument("--loop", action="store_true", help="play again from the start until Ctrl-C")
    p.add_argument("--realtime", action="store_true",
                   help="wait under SCHED_FIFO (needs CAP_SYS_NICE): sub-ms timing on a busy machine")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    p.set_defaults(func=_cmd_replay)

    p = command("recheck", "validate a recording against a new registry; optionally re-record it")
    p.add_argument("root", nargs="?", help="data root of the recording (read only); or --data-root")
    p.add_argument("--config", help="the new registry TOML (default: the packaged example)")
    p.add_argument("--into", metavar="NEW_ROOT", help="re-record into this new data root (failures quarantined)")
    p.add_argument("--type", action="append", help="schema type (repeat for several; default: all)")
    p.add_argument("--user", help="user_id")
    p.add_argument("--session", help="session_id")
    p.add_argument("--show", type=int, default=5, metavar="N", help="failures listed per type (default 5)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_recheck)
