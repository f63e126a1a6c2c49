"""The ``recorder`` command: demo, run, stats, read, verify, catalog, export, keygen."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec

from .exceptions import RecorderError
from .reader import read, verify


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
