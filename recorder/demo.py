"""``recorder demo``: record the example schemas, including bad input, then verify."""

from __future__ import annotations

import argparse
import tempfile
import time

from .exceptions import ValidationError
from .reader import read, verify
from .store import Store
from .testing import invalid_samples, sample_audit, sample_message, sample_raw_action


def run_demo(args: argparse.Namespace) -> int:
    """In-process demo: N producers' worth of 30 fps traffic through one Store."""
    root = args.dir or tempfile.mkdtemp(prefix="recorder-demo-")
    sent = rejected = 0
    reasons: dict[str, int] = {}
    t0 = time.monotonic()
    with Store(args.config, data_root=root) as store:
        frames = int(args.seconds * 30)
        for p in range(args.producers):
            user, session = f"user{p:02d}", f"sess_demo_{p:02d}"
            store.record(sample_audit(user, session, "session_start", p), schema_type="audit_event")
            for i in range(frames):
                store.record(sample_message(user, session, i), schema_type="a3cp_message",
                             producer=f"demo-{p}", pseq=i + 1)
                if i % 10 == 0:
                    store.record(sample_raw_action(user, session, i), schema_type="raw_action")
                sent += 1 + (i % 10 == 0)
            for stype, rec, _why in invalid_samples(user, session):
                sent += 1
                try:
                    store.record(rec, schema_type=stype)
                except ValidationError as e:
                    rejected += 1
                    reasons[e.code] = reasons.get(e.code, 0) + 1
            store.record(sample_audit(user, session, "session_end", p + 1000), schema_type="audit_event")
            sent += 2
    elapsed = time.monotonic() - t0
    on_disk = sum(1 for _ in read(root))
    files, problems = verify([root])
    print(f"data root:   {root}")
    print(f"sent:        {sent} records in {elapsed:.2f} s")
    print(f"on disk:     {on_disk}")
    print(f"rejected:    {rejected} ({', '.join(f'{k}={v}' for k, v in sorted(reasons.items()))})")
    print(f"verify:      {files} files, {len(problems)} problems")
    for p in problems:
        print(f"  BAD {p}")
    ok = not problems and on_disk + rejected == sent
    print("result:      OK" if ok else "result:      FAILED")
    return 0 if ok else 1
