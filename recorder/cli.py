"""The ``recorder`` command: demo, run, stats, read, verify, catalog, export, keygen, replay, recheck."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from ._env import iso_ns
from .exceptions import RecorderError
from .reader import read, verify

if TYPE_CHECKING:
    from .replay import Replay


def _cmd_verify(args: argparse.Namespace) -> int:
    n, problems = verify(args.paths, show_progress=not args.quiet)
    for p in problems:
        print(f"BAD  {p}")
    print(f"verify: {n} files checked, {len(problems)} with problems")
    return 1 if problems else 0


def _cmd_read(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for e in read(args.root, schema_type=args.type, user_id=args.user, session_id=args.session,
                  since=args.since, until=args.until):
        out.write(msgspec.json.encode(e) + b"\n")
    out.flush()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .supervisor import Supervisor

    return Supervisor(args.config, args.data_root).run()


def _cmd_stats(args: argparse.Namespace) -> int:
    import zmq

    from . import protocol as P
    from ._run import endpoints
    from .config import load_config
    from .exceptions import RecorderUnavailable

    cfg = load_config(args.config)
    ep = endpoints(cfg, args.data_root or cfg.recorder.data_root)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if args.curve_server_public or args.curve_client_secret:
        from .client import _load_curve

        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = _load_curve(
            args.curve_server_public, args.curve_client_secret)
    try:
        sock.connect(ep.control)
        sock.send(P.encode(P.StatsRequest()))
        if not sock.poll(int(args.timeout * 1000)):
            raise RecorderUnavailable(f"no answer from {ep.control} within {args.timeout} s")
        reply = P.decode_control(sock.recv())
    finally:
        sock.close()
        ctx.term()
    assert isinstance(reply, P.StatsReply)
    stats = msgspec.json.decode(reply.body)
    if args.json:
        print(msgspec.json.format(reply.body, indent=2).decode())
        return 0
    print(f"recorder pid {stats['pid']}  up {stats['uptime_s']:.0f} s  restarts {stats['restarts']}  "
          f"producers {stats['producers']}  cpu {stats['cpu_s']:.1f} s  rss {stats['rss_bytes'] / 2**20:.0f} MiB")
    d = stats["disk"]
    print(f"data root {stats['data_root']}  disk {d['used'] / 2**30:.1f}/{d['total'] / 2**30:.1f} GiB "
          f"({d['percent']}%)  quarantined {stats['quarantined']} (dropped {stats['quarantine_dropped']})")
    print(f"received {stats['received']}  duplicates {stats['duplicates']}  gaps {stats['gaps']}  "
          f"bad frames {stats['bad_frames']}")
    print(f"{'type':<16}{'records':>9}{'bytes':>12}{'rejects':>9}{'batches':>9}{'mean':>7}{'max':>6}"
          f"{'queue':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'fast':>9}{'ref':>8}{'disagree':>9}")
    for name, t in stats["types"].items():
        lat, acc = t["ack_latency_ms"], t.get("accept", {})
        print(f"{name:<16}{t['records']:>9}{t['bytes']:>12}{t['rejects']:>9}{t['batches']:>9}"
              f"{t['batch_mean']:>7}{t['batch_max']:>6}{t['queue_depth']:>7}"
              f"{lat.get('p50', 0):>8.2f}{lat.get('p99', 0):>8.2f}{lat.get('max', 0):>8.2f}"
              f"{acc.get('fast', 0):>9}{acc.get('reference', 0):>8}{acc.get('disagreements', 0):>9}")
    return 0


def _cmd_catalog(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._env import runtime_env
    from .catalog import rebuild
    from .reader import _catalog

    if args.rebuild:
        import os

        from ._run import take_lock

        fd = take_lock(os.path.join(args.root, "_recorder", "lock"),
                       f"{args.root}: a recorder is running on it; stop it before rebuilding", mode=0o644)
        try:
            n = rebuild(args.root, {"env": runtime_env("(rebuild)")})
        finally:
            os.close(fd)
        print(f"catalog rebuilt from manifests and tombstones: {n} entries")
        return 0
    rows = sorted(_catalog(Path(args.root)).values(), key=lambda m: int(m["first_seq"] or 0))
    print(f"{'schema type':<14}{'records':>8}{'bytes':>10}  {'first timestamp':<25}{'versions':<14}{'state':<10}path")
    for m in rows:
        if args.type and m["schema_type"] != args.type:
            continue
        if args.user and args.user not in m["users"]:
            continue
        if args.session and args.session not in m["sessions"]:
            continue
        size = m.get("parquet", {}).get("bytes", m["bytes"])
        path = m.get("parquet", {}).get("path", m["path"])
        print(f"{m['schema_type']:<14}{m['records']:>8}{size:>10}  {m['first_timestamp'] or '-':<25}"
              f"{','.join(sorted(m['versions'])):<14}{m['state']:<10}{path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import os

    from . import _durable
    from ._progress import Progress
    from .reader import data_files, read_table

    out = os.path.abspath(args.out)
    files = data_files(args.root, schema_type=args.type, user_id=args.user, session_id=args.session)
    progress = Progress(len(files), "export", unit="files")
    dir_fd = _durable.open_root(os.path.dirname(out))
    try:
        if args.format == "parquet":
            import pyarrow.parquet as pq

            table = read_table(args.root, args.type, config=args.config, user_id=args.user,
                               session_id=args.session, since=args.since, until=args.until)
            progress.advance(len(files))
            _durable.publish(dir_fd, os.path.basename(out),
                             lambda f: pq.write_table(table, f, compression="zstd"), out)
            n = table.num_rows
        else:
            lines = []
            for e in read(args.root, schema_type=args.type, user_id=args.user, session_id=args.session,
                          since=args.since, until=args.until):
                e.pop("prev", None), e.pop("h", None), e.pop("commit", None)
                lines.append(msgspec.json.encode(e))
            progress.advance(len(files))
            _durable.write_new(dir_fd, os.path.basename(out), b"\n".join(lines) + b"\n" if lines else b"", out)
            n = len(lines)
    finally:
        _durable.close(dir_fd)
        progress.done()
    print(f"export: {n} records of {args.type} from {len(files)} files -> {out}")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    import os

    import zmq.auth

    os.makedirs(args.dir, mode=0o700, exist_ok=True)
    public, secret = zmq.auth.create_certificates(args.dir, args.name)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    print(f"public key: {public}\nsecret key: {secret}  (owner-only; never copy it off this host)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


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
    from .replay import Replay, parse_time

    if not os.path.isdir(args.root):
        raise RecorderError(f"ROOT {args.root}: no such directory")
    parse_time(args.since, "--since")
    parse_time(args.until, "--until")
    if args.speed is not None and not args.speed > 0:
        raise ValueError(f"--speed: {args.speed:g} must be > 0 (or --max: no waiting)")
    if args.wait_subscribers < 0:
        raise ValueError("--wait-subscribers: must be >= 0")
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
    from .recheck import check_into, recheck

    if not os.path.isdir(args.root):
        raise RecorderError(f"ROOT {args.root}: no such directory")
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


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recorder", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("verify", help="check journals: headers, hash chains, order, checkpoints")
    p.add_argument("paths", nargs="+", help="files or directories (a data root)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("read", help="print stored records as JSONL, in insertion order")
    p.add_argument("root", help="data root (or a directory below it)")
    p.add_argument("--type", help="schema type")
    p.add_argument("--user", help="user_id")
    p.add_argument("--session", help="session_id")
    p.add_argument("--since", help="record timestamp >= this ISO-8601 UTC time")
    p.add_argument("--until", help="record timestamp < this ISO-8601 UTC time")
    p.set_defaults(func=_cmd_read)

    p = sub.add_parser("catalog", help="list sealed segments (from the catalog), or rebuild it")
    p.add_argument("root", help="data root")
    p.add_argument("--rebuild", action="store_true", help="rebuild the catalog from manifests and tombstones")
    p.add_argument("--type", help="schema type")
    p.add_argument("--user", help="user_id")
    p.add_argument("--session", help="session_id")
    p.set_defaults(func=_cmd_catalog)

    p = sub.add_parser("export", help="write a filtered slice of one schema type to Parquet or JSONL")
    p.add_argument("root", help="data root")
    p.add_argument("--type", required=True, help="schema type")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    p.add_argument("--config", help="registry TOML (for the models; default: the packaged example)")
    p.add_argument("--user", help="user_id")
    p.add_argument("--session", help="session_id")
    p.add_argument("--since", help="record timestamp >= this ISO-8601 UTC time")
    p.add_argument("--until", help="record timestamp < this ISO-8601 UTC time")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("replay", help="play a recording back in recorder order, at its pace or faster")
    p.add_argument("root", help="data root (or a directory below it)")
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

    p = sub.add_parser("recheck", help="validate a recording against a new registry; optionally re-record it")
    p.add_argument("root", help="data root of the recording (read only)")
    p.add_argument("--config", help="the new registry TOML (default: the packaged example)")
    p.add_argument("--into", metavar="NEW_ROOT", help="re-record into this new data root (failures quarantined)")
    p.add_argument("--type", action="append", help="schema type (repeat for several; default: all)")
    p.add_argument("--user", help="user_id")
    p.add_argument("--session", help="session_id")
    p.add_argument("--show", type=int, default=5, metavar="N", help="failures listed per type (default 5)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_recheck)

    p = sub.add_parser("keygen", help="make a CURVE key pair (NAME.key public, NAME.key_secret owner-only)")
    p.add_argument("dir", help="directory for the certificate files")
    p.add_argument("--name", default="recorder", help="file name stem (default: recorder)")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("run", help="run a supervised recorder (restarts it on crash)")
    p.add_argument("--config", help="registry TOML (default: the packaged example)")
    p.add_argument("--data-root", help="overrides recorder.data_root")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("stats", help="counters of a running recorder")
    p.add_argument("--config", help="registry TOML (default: the packaged example)")
    p.add_argument("--data-root", help="overrides recorder.data_root")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--curve-server-public", help="the recorder's public certificate (CURVE over TCP)")
    p.add_argument("--curve-client-secret", help="this client's secret certificate (CURVE over TCP)")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("demo", help="record the example schemas from several producers, then verify")
    p.add_argument("--dir", help="data root to record into (default: a new temporary directory)")
    p.add_argument("--config", help="registry TOML (default: the packaged example)")
    p.add_argument("--producers", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.set_defaults(func=_cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recorder`` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (RecorderError, ValueError) as e:
        print(f"recorder: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
