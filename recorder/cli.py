"""The recorder command: record A3CP pipeline records validated, in order, durable and hash-chained.

Commands: demo, run, stats, read, verify, catalog, export, replay, recheck, keygen.
Every command takes the data root as --data-root (read, verify, catalog
and export also as their first argument).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import msgspec

from . import _logging
from ._env import __version__
from ._cli_replay import add_commands as _replay_commands
from .publish import add_commands as _publish_commands
from .publish import load_state, restore_publication
from .schema.config import load_config
from .exceptions import (
    ConfigError,
    CorruptionError,
    DurabilityError,
    NotARecording,
    PublishError,
    RecorderError,
    RecorderUnavailable,
    StorageFull,
    UsageError,
)
from .storage import INTERNAL_DIR, formats
from .reading.reader import data_files, read, recorded_types, verify

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3
EXIT_CODES = """exit codes:
  0  done, nothing wrong
  1  problems found: verify found damage, read skipped malformed lines, the demo's checks failed
  2  usage or configuration error: a wrong option, path, schema type or config (nothing was done)
  3  runtime failure: no recorder answered, a disk or file operation failed, run gave up restarting
"""
_log = logging.getLogger("recorder.cli")


def _root(args: argparse.Namespace) -> str:
    """The data root: the positional argument or --data-root (they must agree), else the config's."""
    given = [r for r in (getattr(args, "root", None), args.data_root) if r]
    if len(given) == 2 and os.path.realpath(given[0]) != os.path.realpath(given[1]):
        raise UsageError("--data-root", f"{given[1]!r} differs from the data root argument {given[0]!r}")
    return given[0] if given else load_config(getattr(args, "config", None)).recorder.data_root


def _time_arg(text: str) -> str:
    """An ISO-8601 time or date (a bound without a zone is UTC); argparse names the option on failure."""
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)") from None
    return text


def _check_type(root: str, schema_type: str, config: str | None) -> None:
    """A --type must be recorded in ``root`` or registered in the config."""
    if data_files(root, schema_type=schema_type) or schema_type in load_config(config).types:
        return
    present = ", ".join(sorted(recorded_types(root))) or "none"
    raise UsageError("--type", f"no schema type {schema_type!r} in {root} nor in the config "
                               f"(types recorded there: {present})")


def _cmd_verify(args: argparse.Namespace) -> int:
    paths = list(args.paths) + ([args.data_root] if args.data_root else [])
    n, problems = verify(paths or [_root(args)], show_progress=not args.quiet)
    for p in problems:
        print(f"BAD  {p}")
    print(f"verify: {n} files checked, {len(problems)} with problems")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _cmd_read(args: argparse.Namespace) -> int:
    root = _root(args)
    if args.type:
        _check_type(root, args.type, args.config)
    skipped: list[CorruptionError] = []

    def on_problem(problem: CorruptionError) -> None:
        skipped.append(problem)
        _log.warning("skipped a malformed line: %s", problem)

    out = sys.stdout.buffer
    for e in read(root, schema_type=args.type, user_id=args.user, session_id=args.session,
                  since=args.since, until=args.until, strict=args.strict, on_problem=on_problem):
        out.write(msgspec.json.encode(e) + b"\n")
    out.flush()
    if skipped:
        _log.warning("%d malformed lines skipped (recorder verify names the damage; --strict stops at it)",
                     len(skipped))
    return EXIT_PROBLEMS if skipped else EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from .service.supervisor import Supervisor

    return Supervisor(args.config, args.data_root, log_format=args.log_format, log_level=args.log_level,
                      metrics=args.metrics).run()


def _cmd_stats(args: argparse.Namespace) -> int:
    import zmq

    from .schema.endpoints import endpoints
    from .service.stats import fetch_stats

    cfg = load_config(args.config)
    ep = endpoints(cfg, args.data_root or cfg.recorder.data_root)
    curve = None
    if args.curve_server_public or args.curve_client_secret:
        from .client import load_curve

        curve = load_curve(args.curve_server_public, args.curve_client_secret)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        stats = fetch_stats(ctx, ep.control, args.timeout, curve)
    finally:
        ctx.term()
    if cfg.publish is not None:  # the publisher's own figures, from its state file under the data root
        stats["publish"] = load_state(os.path.realpath(args.data_root or cfg.recorder.data_root))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(stats), indent=2).decode())
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
    refused = {name: t.get("rejects_by_code", {}) for name, t in stats["types"].items()}
    for name, by_code in stats.get("rejects_at_ingress", {}).items():
        mine = refused.setdefault(name, {})
        for code, n in by_code.items():
            mine[code] = mine.get(code, 0) + n
    for name, by_code in refused.items():
        if by_code:
            print(f"rejected {name}: " + ", ".join(f"{code} {n}" for code, n in sorted(by_code.items())))
    if "publish" in stats:
        pub, b = stats["publish"], stats["publish"].get("backlog") or {}
        buffer_s = pub.get("buffer_s")
        print(f"publish to {pub.get('table_root', '-')}: {pub.get('segments', 0)} segments published, "
              f"{b.get('segments', 0)} waiting ({b.get('bytes', 0)} bytes), last success "
              f"{pub.get('last_success') or 'never'}, buffer left "
              f"{'-' if buffer_s is None else f'{buffer_s / 3600:.1f} h'}, conflicts retried "
              f"{pub.get('conflicts_retried', 0)}, last error {pub.get('last_error') or 'none'}")
    return 0


def _cmd_catalog(args: argparse.Namespace) -> int:
    from ._env import runtime_env
    from .storage.catalog_log import rebuild
    from .storage.catalog import sealed_segments
    from .reading.reader import check_recording

    root = str(check_recording(_root(args)))
    if args.rebuild:
        from .storage.locks import take_lock

        if not os.path.isdir(os.path.join(root, INTERNAL_DIR)):
            raise NotARecording(root, f"not a data root (no {INTERNAL_DIR}/ directory); --rebuild needs the data root")
        fd = take_lock(os.path.join(root, INTERNAL_DIR, "lock"),
                       f"{root}: a recorder is running on it; stop it before rebuilding", mode=0o644)
        try:
            n = rebuild(root, {"env": runtime_env("(rebuild)")})
        finally:
            os.close(fd)
        print(f"catalog rebuilt from manifests and tombstones: {n} entries")
        cfg = load_config(args.config) if args.config else None
        if cfg is not None and cfg.publish is not None:
            versions = restore_publication(root, cfg)
            print("publication state restored from the tables' transaction versions: "
                  + (", ".join(f"{t} {v}" for t, v in versions.items()) or "no tables"))
        return 0
    rows = sorted(sealed_segments(Path(root)).values(), key=lambda m: int(m["first_seq"] or 0))
    print(f"{'schema type':<14}{'records':>8}{'bytes':>10}  {'first timestamp':<25}{'versions':<14}{'state':<10}path")
    for m in rows:
        if args.type and m["schema_type"] != args.type:
            continue
        if args.user and args.user not in m["users"]:
            continue
        if args.session and args.session not in m["sessions"]:
            continue
        size = formats.converted(m).get("bytes", m["bytes"])
        path = formats.data_path(m)
        print(f"{m['schema_type']:<14}{m['records']:>8}{size:>10}  {m['first_timestamp'] or '-':<25}"
              f"{','.join(sorted(m['versions'])):<14}{m['state']:<10}{path}")
    return 0


def _out_path(out: str) -> str:
    """The absolute --out path; refused when it is a directory or its directory does not exist."""
    path = os.path.abspath(out)
    if os.path.isdir(path):
        raise UsageError("--out", f"{out} is a directory; name the file to write")
    if not os.path.isdir(os.path.dirname(path)):
        raise UsageError("--out", f"directory {os.path.dirname(path)} does not exist (export creates none)")
    return path


def _cmd_export(args: argparse.Namespace) -> int:
    from ._progress import Progress
    from .storage.output import OutputDir
    from .reading.reader import read_table

    root = _root(args)
    out = _out_path(args.out)
    files = data_files(root, schema_type=args.type, user_id=args.user, session_id=args.session)
    if args.format == "jsonl":
        _check_type(root, args.type, args.config)
    progress = Progress(len(files), "export", unit="files")
    out_dir = OutputDir(os.path.dirname(out))
    try:
        if args.format == "parquet":
            import pyarrow.parquet as pq

            table = read_table(root, args.type, config=args.config, user_id=args.user,
                               session_id=args.session, since=args.since, until=args.until)
            progress.advance(len(files))
            out_dir.write_with(os.path.basename(out), lambda f: pq.write_table(table, f, compression="zstd"), out)
            n = table.num_rows
        else:
            lines = []
            for e in read(root, schema_type=args.type, user_id=args.user, session_id=args.session,
                          since=args.since, until=args.until, strict=True):
                e.pop("prev", None), e.pop("h", None), e.pop("commit", None)
                lines.append(msgspec.json.encode(e))
            progress.advance(len(files))
            out_dir.write_bytes(os.path.basename(out), b"\n".join(lines) + b"\n" if lines else b"", out)
            n = len(lines)
    finally:
        out_dir.close()
        progress.done()
    print(f"export: {n} records of {args.type} from {len(files)} files -> {out}")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    import zmq.auth

    os.makedirs(args.dir, mode=0o700, exist_ok=True)
    public, secret = zmq.auth.create_certificates(args.dir, args.name)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    print(f"public key: {public}\nsecret key: {secret}  (owner-only; never copy it off this host)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.fleet:
        from .publish.demo import run_fleet_demo

        return run_fleet_demo(args)
    from .demo import run_demo

    return run_demo(args)


def _common() -> argparse.ArgumentParser:
    """Options every command takes: the data root and the log format."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-root", metavar="DIR",
                        help="the data root (default: recorder.data_root of the config, \"recording\")")
    common.add_argument("--log-format", choices=["plain", "json"],
                        help="log lines on stderr as plain text or JSON objects "
                             "(default: recorder.log_format of the config, plain)")
    common.add_argument("--log-level", choices=list(_logging.LEVELS),
                        help="least important log lines shown (default: recorder.log_level of the config, info)")
    return common


def _filters(p: argparse.ArgumentParser, type_required: bool = False) -> None:
    p.add_argument("--type", required=type_required, help="schema type, e.g. a3cp_message")
    p.add_argument("--user", help="only records of this user_id")
    p.add_argument("--session", help="only records of this session_id")


def _times(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_time_arg, metavar="TIME",
                   help="only records whose timestamp is at or after this ISO-8601 time (UTC if no zone)")
    p.add_argument("--until", type=_time_arg, metavar="TIME",
                   help="only records whose timestamp is before this ISO-8601 time (UTC if no zone)")


def _config(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", metavar="TOML", help=f"registry TOML ({what}; default: the packaged example)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recorder", description=__doc__, epilog=EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"recorder {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    common = _common()

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", epilog=EXIT_CODES,
                              parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("verify", "check journals: headers, hash chains, order, checkpoints, manifests")
    p.add_argument("paths", nargs="*", metavar="PATH", help="journal files or directories (a data root)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line (drawn only on a terminal)")
    _config(p, "for the default data root")
    p.set_defaults(func=_cmd_verify)

    p = command("read", "print stored records as JSON lines, in insertion order")
    p.add_argument("root", nargs="?", help="data root, or a directory below it")
    _filters(p)
    _times(p)
    p.add_argument("--strict", action="store_true",
                   help="stop at the first malformed line (exit 1) instead of skipping it with a warning")
    _config(p, "its types count as known to --type")
    p.set_defaults(func=_cmd_read)

    p = command("catalog", "list sealed segments (from the catalog), or rebuild it")
    p.add_argument("root", nargs="?", help="data root")
    p.add_argument("--rebuild", action="store_true", help="rebuild the catalog from manifests and tombstones")
    _filters(p)
    _config(p, "for the default data root")
    p.set_defaults(func=_cmd_catalog)

    p = command("export", "write a filtered slice of one schema type to a Parquet or JSONL file")
    p.add_argument("root", nargs="?", help="data root")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file; its directory must exist (replaced atomically if the file exists)")
    p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet",
                   help="Parquet (default; the type's schema, even with no rows) or JSON lines")
    _config(p, "its models give the Parquet schema")
    _filters(p, type_required=True)
    _times(p)
    p.set_defaults(func=_cmd_export)

    _replay_commands(command)
    _publish_commands(command)

    p = command("keygen", "make a CURVE key pair (NAME.key public, NAME.key_secret owner-only)")
    p.add_argument("dir", help="directory for the certificate files (created owner-only if missing)")
    p.add_argument("--name", default="recorder", help="file name stem (default: recorder)")
    p.set_defaults(func=_cmd_keygen)

    p = command("run", "run a supervised recorder (restarts it on crash; SIGTERM or Ctrl-C stops it)")
    _config(p, "types, models, endpoints, limits")
    p.add_argument("--metrics", metavar="[HOST:]PORT",
                   help="serve Prometheus metrics on this address (default: recorder.metrics_address; "
                        "a bare port binds 127.0.0.1; port 0 picks a free one)")
    p.set_defaults(func=_cmd_run)

    p = command("stats", "counters of a running recorder")
    _config(p, "for its endpoints")
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON instead of a table")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                   help="how long to wait for the recorder's answer (default: 3)")
    p.add_argument("--curve-server-public", metavar="FILE", help="the recorder's public certificate (CURVE over TCP)")
    p.add_argument("--curve-client-secret", metavar="FILE", help="this client's secret certificate (CURVE over TCP)")
    p.set_defaults(func=_cmd_stats)

    p = command("demo", "record the example schemas from several producers, crash the recorder once, verify")
    p.add_argument("--dir", help="a new or empty directory to record into (default: a new temporary one); "
                                 "same as --data-root")
    _config(p, "types and models")
    p.add_argument("--producers", type=int, default=3, help="producer processes (default: 3)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of 30 fps traffic (default: 3)")
    p.add_argument("--fleet", action="store_true",
                   help="three recorders publishing into shared Delta tables on a local SeaweedFS server, one "
                        "publisher killed mid-run, one query over the fleet (needs the fleet extra)")
    p.set_defaults(func=_cmd_demo)
    return ap


def _exit_code(e: BaseException) -> int:
    """Exit code of a command that raised ``e`` (see EXIT_CODES)."""
    if isinstance(e, CorruptionError):
        return EXIT_PROBLEMS
    if isinstance(e, (RecorderUnavailable, DurabilityError, StorageFull, PublishError, OSError)):
        return EXIT_RUNTIME
    return EXIT_USAGE  # UsageError, ConfigError, NotARecording, UnknownSchemaError, a lock held by another


def _log_settings(args: argparse.Namespace) -> tuple[str, str]:
    """Log format and level: the options, else the config's keys (when it loads), else plain and info."""
    fmt, level = args.log_format, args.log_level
    if fmt is None or level is None:
        try:
            settings = load_config(getattr(args, "config", None)).recorder
        except ConfigError:
            settings = None  # the command itself reports it
        fmt = fmt or (settings.log_format if settings else "plain")
        level = level or (settings.log_level if settings else "info")
    return fmt, level


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the recorder console script; returns an exit code of EXIT_CODES."""
    args = _parser().parse_args(argv)
    args.log_format, args.log_level = _log_settings(args)
    _logging.configure(args.log_format, args.log_level)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return EXIT_OK  # `recorder read ... | head`
    except (RecorderError, ValueError, OSError) as e:
        _log.error("%s", e)
        return _exit_code(e)
    except KeyboardInterrupt:
        return 130
    finally:
        _logging.unconfigure()
