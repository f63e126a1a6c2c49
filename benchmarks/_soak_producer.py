"""One producer process of the crash soak: paced mixed traffic through one Client, then its history as JSON."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

#: a record's final state in a history: acknowledged as durable, refused, or neither
ACKED, REJECTED, UNKNOWN = "acked", "rejected", "unknown"


def produce(a: argparse.Namespace) -> int:
    """Send paced mixed traffic until the stop file appears; flush; write the history JSON.

    SIGTERM (the orchestrator aborting) stops sending and cuts the flush short,
    so a history is written whatever happened.
    """
    from recorder.client import Client
    from recorder.exceptions import RecorderError, RecorderUnavailable, RejectedError
    from recorder.testing import sample_audit, sample_message, sample_raw_action

    aborting = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: aborting.set())
    user = f"user{a.index:02d}"
    session_no = 0
    session = f"soak{a.index:02d}s{session_no:04d}"
    # record() blocks at most SLICE s on a full buffer, so a stop or an abort is seen.
    slice_s = 2.0
    c = Client(config=a.config, data_root=a.data_root, user_id=user, timeout=slice_s)
    # (pseq, record_id, schema type, meant to be rejected)
    sent: list[tuple[int, str, str, bool]] = []
    pool = [sample_message(user, "x", i) for i in range(64)]  # content varies, ids are fresh per record
    actions = [sample_raw_action(user, "x", i) for i in range(16)]
    blocked_since: float | None = None

    def send(rec: dict[str, Any], stype: str, bad: bool = False) -> bool:
        nonlocal blocked_since
        rid = str(uuid.uuid4())
        rec = dict(rec, record_id=rid, session_id=session)
        while not aborting.is_set():
            try:
                pseq = c.record(rec, schema_type=stype)  # no pseq is taken when it raises
            except RecorderUnavailable:  # buffer full (max_pending): backpressure
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > a.flush_timeout:
                    raise
                continue
            blocked_since = None
            sent.append((pseq, rid, stype, bad))
            return True
        return False

    stop = Path(a.stop_file)
    t0 = time.monotonic()
    k = 0
    max_pending = 0
    error = None
    try:
        while (k % 32 or not stop.exists()) and not aborting.is_set():
            max_pending = max(max_pending, c.pending)
            if a.session_records and k and k % a.session_records == 0:
                send(sample_audit(user, session, "session_end", k), "audit_event")
                session_no += 1
                session = f"soak{a.index:02d}s{session_no:04d}"
                send(sample_audit(user, session, "session_start", k), "audit_event")
            if k % 4 == 3:
                send(actions[k % len(actions)], "raw_action")
            elif k % 97 == 50:
                send(sample_audit(user, session, "checkpoint", k), "audit_event")
            elif k % 211 == 105:  # classifier_output without "unknown": the recorder must refuse it
                good = pool[k % len(pool)]
                send(dict(good, classifier_output={"hungry": 0.9, "drink": 0.1}), "a3cp_message", bad=True)
            else:
                send(pool[k % len(pool)], "a3cp_message")
            k += 1
            delay = t0 + k / a.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a capture loop, not waiting on a condition
    except RecorderUnavailable as e:
        error = f"record() blocked on a full buffer for {a.flush_timeout:g} s: {e}"
    rejected: dict[int, str] = {}
    t_flush = time.monotonic()
    while True:
        try:
            c.flush(timeout=slice_s)
            break
        except RejectedError as e:  # raised once everything is acknowledged
            rejected = {r[0]: r[1] for r in e.rejections}
            break
        except RecorderError as e:
            if aborting.is_set() or time.monotonic() - t_flush > a.flush_timeout:
                error = error or f"flush: {type(e).__name__}: {e}"
                # flush() reports rejections only once all is acknowledged; take those received so far.
                rejected = {p: r[0] for p, r in c._rejections.items()}
                break
    flush_s = time.monotonic() - t_flush
    acked = c.acked
    if aborting.is_set():
        error = error or "aborted by the orchestrator"
    records = [[pseq, rid, stype, bad,
                REJECTED if pseq in rejected else ACKED if pseq <= acked else UNKNOWN, rejected.get(pseq)]
               for pseq, rid, stype, bad in sent]
    history = {"index": a.index, "producer": c.producer, "pid": os.getpid(), "sent": len(sent), "acked": acked,
               "error": error, "counters": dict(c.counters), "seconds": round(time.monotonic() - t0, 3),
               "max_pending": max_pending, "flush_s": round(flush_s, 3),
               "fields": ["pseq", "record_id", "schema_type", "meant_bad", "state", "reject_code"],
               "records": records}
    try:
        c.close(timeout=0.5)
    except RecorderError:
        pass
    tmp = Path(a.history + ".part")
    tmp.write_text(json.dumps(history), encoding="utf-8")
    tmp.rename(a.history)
    return 0


def producer_main(argv: list[str]) -> int:
    """``python -m benchmarks.soak --producer ...``: parse the producer's options and run it."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak --producer")
    ap.add_argument("--producer", action="store_true")
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--session-records", type=int, default=1500)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--history", required=True)
    ap.add_argument("--flush-timeout", type=float, default=180.0)
    return produce(ap.parse_args(argv))
