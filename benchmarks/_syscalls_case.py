"""One case of the syscalls benchmark: the workload, the recorder it runs against, one fault, and the checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._common import ReadyChild, child_env
from ._syscalls_plan import ERROR_GROUPS, Fault, Reference
from ._syscalls_strace import GROUPS, ROLES, Call, Strace, parse_log, python_threads

CONFIG = """\
# Written by benchmarks/syscalls.py: small segments, so a short workload rotates, seals and converts.
[recorder]
min_free_bytes = 0

[defaults]
durability = "fsync"
hash = "sha256"

[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.jsonl"
rotate_records = 5

[types.raw_action]
model = "recorder.a3cp:RawActionRecord"
format = "parquet"
path = "data/users/{user_id}/sessions/{session_id}/{schema_type}_{segment:04d}.parquet"
max_record_bytes = 1048576
rotate_records = 3
"""
#: rotate_records of each type in CONFIG: no segment may hold more
LIMITS = {"a3cp_message": 5, "raw_action": 3}
USER, SESSION = "u1", "s1"
#: (schema type, sample index): 12 messages (2 sealed segments, 1 open) and 7 actions (2 Parquet files, 1 open)
WORKLOAD: list[tuple[str, int]] = [
    ("a3cp_message", 0), ("a3cp_message", 1), ("raw_action", 1001), ("a3cp_message", 2), ("a3cp_message", 3),
    ("raw_action", 1003), ("a3cp_message", 4), ("a3cp_message", 5), ("raw_action", 1005), ("a3cp_message", 6),
    ("a3cp_message", 7), ("raw_action", 1007), ("a3cp_message", 8), ("a3cp_message", 9), ("raw_action", 1009),
    ("a3cp_message", 10), ("raw_action", 1011), ("a3cp_message", 11), ("raw_action", 1013),
]
RESUMED = [("a3cp_message", 200), ("raw_action", 1200)]  # after strace detached, same recorder
AFTER_RESTART = [("a3cp_message", 300), ("raw_action", 1300)]
ACK_TIMEOUT = 15.0  # s a record may wait for its acknowledgement while the recorder runs
RESUME_TIMEOUT = 3.0  # likewise, once the fault cleared (an idle recorder acknowledges in ms)
SETTLE = 1.3  # s after the workload: the writers' housekeeping (1 s) drains finished seals
READY_TIMEOUT = 30.0


def record_for(stype: str, i: int) -> dict[str, Any]:
    """The record of the workload item (schema type, sample index)."""
    from recorder.testing import sample_message, sample_raw_action

    if stype == "raw_action":
        return sample_raw_action(USER, SESSION, i, frames=2)
    return sample_message(USER, SESSION, i)


# -- the recorder process ------------------------------------------------------------------------
class RecorderProc(Protocol):
    """What a case needs of a started recorder (``tests/integration``'s ``Proc`` has it too)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def wait(self, timeout: float) -> int: ...

    def signal(self, sig: int) -> None: ...

    def describe(self, lines: int = 30) -> str: ...


#: (data root, config) -> a started recorder and its READY JSON
Start = Callable[[Path, Path], "tuple[RecorderProc, dict[str, Any]]"]


class _Child(ReadyChild):
    """``python -m recorder.router``: READY lines parsed, stderr appended to a file."""

    def __init__(self, root: Path, config: Path, log: Path) -> None:
        super().__init__(["-m", "recorder.router", "--data-root", str(root), "--config", str(config)], log,
                         child_env(), append=True, new_session=True)

    def _see(self) -> str:
        return "\n" + self.describe()

    def _exited_early(self) -> str:
        return f"recorder exited before READY{self._see()}"

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"recorder still running after {timeout:g} s\n{self.describe()}") from None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)


class Launcher:
    """Starts recorders for the benchmark and kills whatever is left at ``close``."""

    def __init__(self) -> None:
        self.children: list[_Child] = []

    def start(self, root: Path, config: Path) -> tuple[RecorderProc, dict[str, Any]]:
        child = _Child(root, config, root.parent / "recorder.stderr")
        self.children.append(child)
        return child, child.next_ready(READY_TIMEOUT)[1]

    def close(self) -> None:
        for c in self.children:
            c.kill_group()
        self.children.clear()


# -- the reference run ---------------------------------------------------------------------------
def _pid_free(rel: str, pid: int) -> str:
    return rel.replace(f".tmp-{pid}", ".tmp-{pid}")


def write_config(work: Path) -> Path:
    config = work / "syscalls.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def reference(start: Start, work: Path) -> Reference:
    """Run the workload once with every thread traced; count data-root syscalls per role."""
    from recorder.client import Client

    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work)
    root = work / "data"
    t0 = time.monotonic()
    rec, ready = start(root, config)
    pid = ready["pid"]
    real = os.path.realpath(root)
    threads = python_threads(pid)
    role_of = dict(zip(threads, ROLES))
    prefix = work / "trace"
    traced = ",".join(s for g in GROUPS.values() for s in g)
    st = Strace(["-f", "-ff", "-p", str(pid), "-e", f"trace={traced}", "-o", str(prefix)], pid, threads,
                prefix)
    client = Client(data_root=str(root), config=str(config), user_id=USER, session_id=SESSION, timeout=30)
    try:
        history = History()
        if drive(client, WORKLOAD, rec, history) != "done":
            raise RuntimeError(f"the reference run's recorder exited\n{rec.describe()}")
        settle(root, rec, lambda: False, SETTLE)
    finally:
        st.stop()
        _close_client(client)
    rec.signal(signal.SIGTERM)
    rec.wait(30)
    counts: dict[str, dict[str, int]] = {r: dict.fromkeys(GROUPS, 0) for r in ROLES}
    targets: dict[str, dict[str, list[str]]] = {r: {g: [] for g in GROUPS} for r in ROLES}
    paths: set[str] = set()
    for log in work.glob("trace.*"):
        if log.suffix == ".stderr":
            continue
        role = role_of.get(int(log.suffix[1:]), "other")
        for call in parse_log(log.read_text(encoding="utf-8", errors="replace"), real):
            paths.update(_pid_free(p, pid) for p in call.paths)
            if role in counts and call.group in GROUPS:
                counts[role][call.group] += 1
                targets[role][call.group].append(call.paths[0])
    for role in ROLES[2:]:  # the roles by creation order must match what the threads did
        stype = role.split(":", 1)[1]
        if counts[role]["write"] and not any(f"/{stype}_" in p for p in targets[role]["write"]):
            raise RuntimeError(f"thread {role} wrote no {stype} file: thread roles are not as expected "
                               f"({targets[role]['write'][:5]})")
    return Reference(counts, targets, sorted(paths), time.monotonic() - t0)


# -- one fault case ------------------------------------------------------------------------------
@dataclass
class Sent:
    """One record the client sent: producer sequence, workload item, send time, final state."""

    pseq: int
    stype: str
    i: int
    t: float  # time.time() just before record()
    state: str = "unknown"  # acked (durable), rejected, unknown


@dataclass
class History:
    sent: list[Sent] = field(default_factory=list)

    def by_pseq(self) -> dict[int, Sent]:
        return {s.pseq: s for s in self.sent}

    def mark_acked(self, watermark: int, rejected: Iterable[int] = ()) -> None:
        refused = set(rejected)
        for s in self.sent:
            if s.pseq in refused:
                s.state = "rejected"
            elif s.pseq <= watermark and s.state == "unknown":
                s.state = "acked"


def _collect(client: Any, history: History) -> None:
    """Mark what the client knows: its watermark and (via flush) the refusals up to it."""
    from recorder.exceptions import RecorderError, RejectedError

    rejected: list[int] = []
    watermark = client.acked
    if history.sent and watermark >= history.sent[-1].pseq:
        try:
            client.flush(timeout=0.5)
        except RejectedError as e:
            rejected = [r[0] for r in e.rejections]
        except RecorderError:
            pass
    history.mark_acked(watermark, rejected)


def drive(client: Any, items: list[tuple[str, int]], rec: RecorderProc, history: History,
          timeout: float = ACK_TIMEOUT) -> str:
    """Send items one at a time, each waited for; 'done', or 'exited' when the recorder died meanwhile."""
    for stype, i in items:
        if rec.returncode is not None:
            return "exited"
        t = time.time()
        pseq = client.record(record_for(stype, i), schema_type=stype)
        history.sent.append(Sent(pseq, stype, i, t))
        deadline = time.monotonic() + timeout
        while client.acked < pseq:
            if rec.returncode is not None:
                _collect(client, history)
                return "exited"
            if time.monotonic() > deadline:
                raise RuntimeError(f"record #{pseq} not acknowledged within {timeout:g} s while the recorder "
                                   f"ran\n{rec.describe()}")
            time.sleep(0.002)
        _collect(client, history)
    return "done"


def _active_sealing(root: Path) -> list[str]:
    state = root / "_recorder" / "state"
    out = []
    for p in state.glob("active-*.json"):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            out += [k for k, v in doc.items() if v == "sealing"]
    return out


def settle(root: Path, rec: RecorderProc, fired: Callable[[], bool], seconds: float) -> None:
    """Give the recorder time to seal (up to 3 s) and then ``seconds`` more, until the fault fires."""
    seal_by = time.monotonic() + 3
    end = time.monotonic() + seconds
    while rec.returncode is None and not fired():
        now = time.monotonic()
        if now >= end and (now >= seal_by or not _active_sealing(root)):
            return
        time.sleep(0.01)


def unreadable_parquet(root: Path) -> list[str]:
    """Parquet files under a final name (not a hidden temp file) that pyarrow cannot read."""
    import pyarrow.parquet as pq

    bad = []
    for p in sorted(root.rglob("*.parquet")):
        if p.name.startswith("."):
            continue
        try:
            pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            bad.append(f"{p.relative_to(root)}: {type(e).__name__}: {e}")
    return bad


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name)


def lasting_temp_files(root: Path, rec: RecorderProc, within: float = 2.0) -> list[str]:
    """Temp files left behind: while the recorder runs, one of an atomic write still under way (the
    sealer's manifest, say, when the fault fired mid-seal) is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = temp_files(root)
        if not found or rec.returncode is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def _close_client(client: Any) -> None:
    from recorder.exceptions import RecorderError

    try:
        client.close(timeout=0.2)
    except RecorderError:
        pass


def _is_batch_call(fault: Fault, call: Call) -> bool:
    """Did the fault hit a record batch itself: write/fdatasync of a data journal by its writer?"""
    rel = call.paths[0]
    return (fault.role.startswith("writer:") and call.group in ERROR_GROUPS
            and not rel.startswith("_recorder/") and rel.endswith(".jsonl")
            and f"/{fault.role.split(':', 1)[1]}_" in "/" + rel)


def check(root: Path, history: History, producer: str) -> list[str]:
    """The invariants over the final data root (``violations``; empty when all is well)."""
    from recorder import read, verify
    from recorder.storage._trail import check_trail, segment_sizes

    out: list[str] = []
    disk = list(read(root))
    mine = [e for e in disk if e.get("producer") == producer]
    copies = Counter(e["pseq"] for e in mine)
    for s in history.sent:
        n = copies.get(s.pseq, 0)
        if s.state == "acked" and n != 1:
            out.append(f"record #{s.pseq} ({s.stype} {s.i}) acknowledged as durable, on disk {n} times")
        elif s.state == "rejected" and n:
            out.append(f"record #{s.pseq} ({s.stype} {s.i}) refused, yet on disk {n} times")
        elif s.state == "unknown":
            out.append(f"record #{s.pseq} ({s.stype} {s.i}) never acknowledged nor refused")
    for stype in {s.stype for s in history.sent}:
        seqs = [e["pseq"] for e in sorted((e for e in mine if e["schema_type"] == stype), key=lambda e: e["seq"])]
        bad = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
        if bad:
            out.append(f"{stype}: producer order broken (pseq, next): {bad[:10]}")
    want = {(s.stype, record_for(s.stype, s.i)["record_id"]) for s in history.sent}
    ids = Counter((e["schema_type"], e.get("record_id")) for e in mine)
    for key in sorted(want):
        if ids.get(key, 0) != 1:
            out.append(f"logical record {key} on disk {ids.get(key, 0)} times (want 1)")
    files, problems = verify([root])
    out += [f"verify: {p}" for p in problems]
    if files == 0:
        out.append("verify found no journal")
    out += [f"temp file left: {t}" for t in temp_files(root)]
    out += [f"unreadable Parquet file: {b}" for b in unreadable_parquet(root)]
    # the audit log tells every segment's sealing once, as the manifests and the catalog do
    out += [f"audit trail: {p}" for p in check_trail(root).problems]
    out += [f"segment over rotate_records = {LIMITS[t]}: {p} holds {n} records"
            for t, segs in segment_sizes(root).items() for p, n, _ in segs if n > LIMITS.get(t, n)]
    return out


def run_case(fault: Fault, ref: Reference, work: Path, start: Start,
             workload: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """Run one fault case in ``work`` (a fresh directory); returns its result (``violations`` empty if OK).

    ``workload`` replaces WORKLOAD (the reference's counts and paths must still fit it).
    """
    from recorder.client import Client
    from recorder.exceptions import RecorderError, RejectedError

    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work)
    root = work / "data"
    result: dict[str, Any] = {"fault": fault.name, **asdict(fault), "violations": []}
    violations: list[str] = result["violations"]
    history = History()
    rec, ready = start(root, config)
    pid = ready["pid"]
    real = os.path.realpath(root)
    threads = python_threads(pid)
    tid = threads[ROLES.index(fault.role)]
    result["threads"] = threads
    watch = [f"-P{real}"] + [f"-P{real}/{p.replace('{pid}', str(pid))}" for p in ref.paths if p]
    log = work / "strace.log"
    st = Strace(["-p", str(tid), "-o", str(log), *fault.strace_args(), *watch], pid, [tid], log)
    client = Client(data_root=str(root), config=str(config), user_id=USER, session_id=SESSION, timeout=30)
    try:
        def fired() -> bool:
            if fault.then_kill:  # the kill is what counts, and it follows the error
                return False
            try:
                return "INJECTED" in log.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                return False

        try:
            result["workload"] = drive(client, WORKLOAD if workload is None else workload, rec, history)
            settle(root, rec, fired, SETTLE)
        except RuntimeError as e:
            violations.append(str(e).splitlines()[0])
        _collect(client, history)
        result["exit"] = rec.returncode
        result["temps_after_fault"] = lasting_temp_files(root, rec)  # a kill may leave some; a failed write should not
        # Nothing has restarted yet: a Parquet file under its final name must already be whole.
        violations += [f"after the fault: unreadable Parquet file: {b}" for b in unreadable_parquet(root)]
        st.stop()  # detached: the fault is gone from here on
        calls = parse_log(log.read_text(encoding="utf-8", errors="replace"), real)
        hit = [c for c in calls if "INJECTED" in c.result or c.result == "?"]
        killed = rec.returncode == -signal.SIGKILL
        result["fired"] = killed if fault.then_kill else bool(hit) and (fault.action != "kill" or killed)
        result["hit"] = [f"{c.syscall} {' -> '.join(c.paths)} = {c.result}" for c in hit[:3]]
        result["hits"] = len(hit)
        if fault.action == "kill":
            if rec.returncode is not None and rec.returncode != -signal.SIGKILL:
                violations.append(f"recorder exited with {rec.returncode}, not by the injected SIGKILL\n"
                                  f"{rec.describe()}")
        first = next((c for c in hit if "INJECTED" in c.result), None)
        if first is not None and fault.action != "kill" and _is_batch_call(fault, first):
            inflight = [s for s in history.sent if s.t <= first.t]
            if inflight:
                s = inflight[-1]
                result["failed_batch"] = {"pseq": s.pseq, "state": s.state}
                if s.state == "acked":
                    violations.append(f"record #{s.pseq}: its batch's {first.syscall} failed "
                                      f"({first.result}), yet it was acknowledged as durable")
        result["rejected_during_fault"] = sum(s.state == "rejected" for s in history.sent)

        if rec.returncode is None:
            # strace is gone, so is the fault: the same recorder must store new records again.
            try:
                before = len(history.sent)
                drive(client, RESUMED, rec, history, RESUME_TIMEOUT)
                resumed = history.sent[before:]
                if any(s.state != "acked" for s in resumed):
                    violations.append(f"writing did not resume once the fault cleared: "
                                      f"{[(s.pseq, s.state) for s in resumed]}")
            except RuntimeError as e:
                violations.append(str(e).splitlines()[0])
            rec.signal(signal.SIGTERM)
            rc = rec.wait(60)
            result["stop_exit"] = rc
            if rc != 0 and fault.action == "ENOSPC":
                violations.append(f"recorder stopped with {rc} after refusing records for ENOSPC\n{rec.describe()}")
        # Restart without strace: the client resends what was not acknowledged.
        rec2, _ = start(root, config)
        result["restart_exit"] = None
        try:
            try:
                client.flush(timeout=30)
            except RejectedError as e:
                history.mark_acked(client.acked, [r[0] for r in e.rejections])
            except RecorderError as e:
                violations.append(f"after the restart: {e}")
            history.mark_acked(client.acked)
            # Records refused during the fault go again, as new records; then some more.
            again = [(s.stype, s.i) for s in history.sent if s.state == "rejected"]
            before = len(history.sent)
            drive(client, again + AFTER_RESTART, rec2, history)
            late = [s for s in history.sent[before:] if s.state != "acked"]
            if late:
                violations.append(f"after the restart, records not stored: {[(s.pseq, s.state) for s in late]}")
        except RuntimeError as e:
            violations.append(str(e).splitlines()[0])
        finally:
            rec2.signal(signal.SIGTERM)
            result["restart_exit"] = rc2 = rec2.wait(60)
        if rc2 != 0:
            violations.append(f"the restarted recorder stopped with {rc2}\n{rec2.describe()}")
        result["resent"] = client.counters["resent"]
        result["producer"], result["acked"] = client.producer, client.acked
        result["rejected_pseqs"] = [x.pseq for x in history.sent if x.state == "rejected"]
        violations += check(root, history, client.producer)
        result["records"] = dict(Counter(s.state for s in history.sent))
    finally:
        st.stop()
        _close_client(client)
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result
