"""A producer process for the integration tests: sends records through a Client, prints JSON.

Run as ``python tests/integration/_producer.py --data-root D --count N``. It
sends ``count`` a3cp_message records (plus an audit_event every
``--audit-every`` records), optionally paced at ``--rate`` records/s, then
flushes and prints one JSON line: producer id, records sent, the durable
watermark it was acknowledged up to, and the producer sequences refused.
With ``--fork`` it sends, forks, and both processes send and report (the
child first), each as its own producer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

from recorder import Client
from recorder.exceptions import RecorderError, RejectedError
from recorder.testing import sample_audit, sample_message


def send(c: Client, a: argparse.Namespace, start: int) -> None:
    t0 = time.monotonic()
    for i in range(a.count):
        c.record(sample_message(a.user, a.session, start + i), schema_type="a3cp_message")
        if a.audit_every and i % a.audit_every == 0:
            c.record(sample_audit(a.user, a.session, "session_start", start + i), schema_type="audit_event")
        if a.rate:
            delay = t0 + (i + 1) / a.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a capture loop, not waiting on a condition


def finish(c: Client, a: argparse.Namespace, role: str) -> dict[str, Any]:
    rejected: list[int] = []
    error = None
    try:
        c.flush(timeout=a.flush_timeout)
    except RejectedError as e:
        rejected = [r[0] for r in e.rejections]
    except RecorderError as e:
        error = f"{type(e).__name__}: {e}"
    result = {"role": role, "pid": os.getpid(), "producer": c.producer, "sent": c.counters["sent"],
              "acked": c.acked, "rejected": rejected, "error": error, "counters": dict(c.counters)}
    try:
        c.close(timeout=0.5)
    except RecorderError:
        pass
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--user", default="user01")
    ap.add_argument("--session", default="sess01")
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--audit-every", type=int, default=0)
    ap.add_argument("--flush-timeout", type=float, default=60.0)
    ap.add_argument("--fork", action="store_true")
    a = ap.parse_args()
    c = Client(data_root=a.data_root, user_id=a.user, session_id=a.session, timeout=60)
    send(c, a, 0)
    if not a.fork:
        print(json.dumps(finish(c, a, "single")), flush=True)
        return 0
    c.flush(timeout=a.flush_timeout)
    before = c.producer
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            send(c, a, 100_000)
            res = finish(c, a, "child")
            res["parent_producer"] = before
            print(json.dumps(res), flush=True)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    send(c, a, 200_000)
    res = finish(c, a, "parent")
    _, status = os.waitpid(pid, 0)
    res["child_status"] = status
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
