"""Crash at a syscall, sampled: strace SIGKILLs or fails the recorder at the Nth data-root syscall of a thread.

``python -m benchmarks syscalls`` is the full sweep (every N of every thread
role, every syscall group and error kind); ``benchmarks/syscalls.py`` says how
it works and why it attaches to one thread with one ``-P`` per path. These
tests run the same cases through the ``procs`` fixture: one reference run
(module fixture), then one seeded random N per syscall group for SIGKILL and
one per error kind (EIO and ENOSPC, once and from N on, on write and on
fdatasync). The seed comes from ``RECORDER_TEST_SEED`` or the clock and is
named in every failure (``python -m benchmarks syscalls --quick --seed S``
draws the same cases). Each case restarts the recorder, lets the client
resend, and is checked by the benchmark's checker (which includes the audit
trail against manifests and catalog, and the segments' size limits) and
again by service_support's. Last, what the full sweep found, as fixed cases. Where
strace is missing the tests skip, except under ``CI=true``, where that is a
failure; the module prints how many fault cases ran.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .service_support import Procs, assert_verified, check_exactly_once, temp_files

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not installed
    sys.path.insert(0, str(REPO))

from benchmarks import syscalls as S  # noqa: E402

SEED = int(os.environ.get("RECORDER_TEST_SEED", time.time_ns() % 2**32))
_RAN: Counter[str] = Counter()  # fault cases run in this module, by kind


def _unavailable(why: str) -> None:
    """Skip, or fail under CI: a fault test that cannot run there is a failure, not a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the strace tests cannot run: {why}")
    pytest.skip(why)


def _start(procs: Procs) -> S.Start:
    def start(root: Path, config: Path) -> tuple[S.RecorderProc, dict[str, Any]]:
        procs.roots.add(str(root))
        p = procs.spawn("recorder", ["-m", "recorder.router", "--data-root", str(root), "--config", str(config)])
        return p, p.next_ready()

    return start


@pytest.fixture(scope="module")
def reference(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S.Reference]:
    """The workload once with every recorder thread traced: data-root syscalls per role, and their paths."""
    problem = S.strace_problem()
    if problem:
        _unavailable(problem)
    procs = Procs()
    try:
        ref = S.reference(_start(procs), tmp_path_factory.mktemp("syscalls-reference"))
    except RuntimeError as e:
        if "could not attach" not in str(e):
            raise
        _unavailable(str(e).splitlines()[0])
    finally:
        procs.cleanup()
    yield ref
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(_RAN.items()))
    line = (f"\ntest_syscall_crash: {sum(_RAN.values())} fault cases ran ({kinds or 'none'}); seed {SEED}; "
            f"reference run: {ref.total()} data-root syscalls after READY")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():  # shown even when the tests pass
            print(line, flush=True)
    else:
        print(line, flush=True)


def _run(fault: S.Fault, ref: S.Reference, procs: Procs, tmp_path: Path,
         workload: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """One case, checked by the benchmark's checker (returned) and by service_support's (asserted)."""
    result = S.run_case(fault, ref, tmp_path / "case", _start(procs), workload)
    _RAN[fault.kind + ("" if result.get("fired") else " (not reached)")] += 1
    root = tmp_path / "case" / "data"
    if "producer" in result:
        check_exactly_once(root, [{"producer": result["producer"], "acked": result["acked"],
                                   "rejected": result["rejected_pseqs"]}], per_type=True)
        assert_verified(root)
        assert temp_files(root) == []
    return result


def _describe(result: dict[str, Any]) -> str:
    keep = ("fault", "fired", "hit", "exit", "stop_exit", "restart_exit", "records", "failed_batch", "resent")
    return f"seed {SEED}: " + ", ".join(f"{k}={result.get(k)!r}" for k in keep) + "\n" + "\n".join(
        result["violations"])


@pytest.mark.parametrize("group", list(S.GROUPS))
def test_sigkill_at_a_sampled_syscall_loses_nothing_acknowledged(
        reference: S.Reference, procs: Procs, tmp_path: Path, group: str) -> None:
    """A SIGKILL at a random Nth data-root call of one syscall group (ftruncate: inside a cut-back) loses, duplicates and reorders no acknowledged record, and leaves every Parquet file readable."""
    fault = S.sample_kill(reference, group, random.Random(f"{SEED}:0:kill:{group}"))
    assert fault is not None, f"the reference run made no {group} call on the data root: {reference.counts}"
    result = _run(fault, reference, procs, tmp_path)
    assert result["violations"] == [], _describe(result)
    assert result["fired"], f"the fault never fired: {_describe(result)}"


@pytest.mark.parametrize("action,repeat,group", S.ERROR_KINDS,
                         ids=[f"{a}-{'from-N' if r else 'once'}-{g}" for a, r, g in S.ERROR_KINDS])
def test_io_error_at_a_sampled_batch_is_never_acknowledged(
        reference: S.Reference, procs: Procs, tmp_path: Path, action: str, repeat: bool, group: str) -> None:
    """EIO or ENOSPC from a record batch's own write or fdatasync (once, or from then on) is never acknowledged as durable; once the fault clears, writing resumes and everything resent is stored once."""
    rng = random.Random(f"{SEED}:0:{action}:{repeat}:{group}")
    fault = S.sample_error(reference, action, repeat, group, rng)
    assert fault is not None, f"the reference run made no batch {group} call: {reference.targets}"
    result = _run(fault, reference, procs, tmp_path)
    assert result["violations"] == [], _describe(result)
    assert result["fired"], f"the fault never fired: {_describe(result)}"
    batch = result.get("failed_batch")
    assert batch is not None, f"the fault did not hit a record batch: {_describe(result)}"
    if action == "ENOSPC" and result["exit"] is None:
        assert batch["state"] == "rejected", _describe(result)
    if action == "EIO":  # never retried on the same descriptor: the recorder exits, clients resend
        assert result["exit"] == 3 and batch["state"] == "unknown", _describe(result)


# -- what the sweep found, made deterministic --------------------------------------------------------
class RefusedButStored(AssertionError):
    """A batch the recorder refused is on disk (the expected failure below)."""


class WriterStopped(AssertionError):
    """A writer stopped storing records while the recorder ran on (the expected failure below)."""


def _target(ref: S.Reference, role: str, group: str, n: int) -> str:
    return ref.targets[role][group][n - 1]


def test_enospc_while_sealing_never_refuses_a_durable_batch(
        reference: S.Reference, procs: Procs, tmp_path: Path) -> None:
    """ENOSPC from the first seal's head checkpoint on refuses no record that is already durable."""
    role = "writer:a3cp_message"
    assert ".a3cp_message_0000.jsonl.head.tmp-" in _target(reference, role, "write", 8), "precondition"
    result = S.run_case(S.Fault(role, "write", 8, "ENOSPC", repeat=True), reference, tmp_path / "case",
                        _start(procs))
    _RAN["ENOSPC"] += 1
    refused = [v for v in result["violations"] if "refused, yet on disk" in v]
    if refused:
        raise RefusedButStored(_describe(result))
    assert result["violations"] == [], _describe(result)


def test_enospc_during_housekeeping_leaves_the_writer_running(
        reference: S.Reference, procs: Procs, tmp_path: Path) -> None:
    """ENOSPC while idle housekeeping saves the state after a seal finished does not stop that type's writer."""
    role = "writer:a3cp_message"
    # 5 records fill segment 0 (writes 1-7: header, state, 5 batches); the seal writes 8-10 (checkpoint,
    # state, audit); idle, housekeeping saves the state once the sealer finished: write 11.
    assert ".a3cp_message_0000.jsonl.head.tmp-" in _target(reference, role, "write", 8), "precondition"
    assert "/.active-a3cp_message.json.tmp-" in "/" + _target(reference, role, "write", 9), "precondition"
    result = S.run_case(S.Fault(role, "write", 11, "ENOSPC", repeat=True), reference, tmp_path / "case",
                        _start(procs), workload=[("a3cp_message", i) for i in range(5)])
    _RAN["ENOSPC"] += 1
    assert result["fired"], _describe(result)
    if any("not acknowledged within" in v or "did not resume" in v for v in result["violations"]):
        raise WriterStopped(_describe(result))
    assert result["violations"] == [], _describe(result)


class TempLeft(AssertionError):
    """An atomic write's temp file is left behind (the expected failure below)."""


def test_a_failed_checkpoint_write_leaves_no_temp_file(
        reference: S.Reference, procs: Procs, tmp_path: Path) -> None:
    """EIO on the write of a segment's head checkpoint leaves no temp file behind, even while the recorder runs on."""
    role = "writer:a3cp_message"
    assert ".a3cp_message_0000.jsonl.head.tmp-" in _target(reference, role, "write", 8), "precondition"
    # 5 records fill and seal segment 0; the seal's checkpoint write fails once.
    result = S.run_case(S.Fault(role, "write", 8, "EIO"), reference, tmp_path / "case", _start(procs),
                        workload=[("a3cp_message", i) for i in range(5)])
    _RAN["EIO"] += 1
    assert result["fired"] and result["exit"] is None, _describe(result)
    if result["temps_after_fault"] or any("temp file left" in v for v in result["violations"]):
        raise TempLeft(f"{result['temps_after_fault']}\n{_describe(result)}")
    assert result["violations"] == [], _describe(result)


def test_a_kill_between_the_sealing_state_and_its_audit_event_leaves_a_complete_trail(
        reference: S.Reference, procs: Procs, tmp_path: Path) -> None:
    """SIGKILL at the write of the first segment_sealed event (the state file already says "sealing"): after the restart that segment has exactly one segment_sealed event, as every other segment does."""
    role = "writer:a3cp_message"
    assert ".active-a3cp_message.json.tmp-" in _target(reference, role, "write", 9), "precondition"
    assert _target(reference, role, "write", 10) == "_recorder/audit.jsonl", "precondition"
    result = S.run_case(S.Fault(role, "write", 10), reference, tmp_path / "case", _start(procs),
                        workload=[("a3cp_message", i) for i in range(7)])
    _RAN["kill"] += 1
    assert result["fired"], _describe(result)
    assert result["violations"] == [], _describe(result)


def test_an_io_error_on_the_audit_event_of_a_seal_still_leaves_a_complete_trail(
        reference: S.Reference, procs: Procs, tmp_path: Path) -> None:
    """EIO on the write of the first segment_sealed event (the audit log drops it, the recorder runs on): the sealer writes it again, so every segment still has exactly one segment_sealed event."""
    role = "writer:a3cp_message"
    assert _target(reference, role, "write", 10) == "_recorder/audit.jsonl", "precondition"
    result = S.run_case(S.Fault(role, "write", 10, "EIO"), reference, tmp_path / "case", _start(procs),
                        workload=[("a3cp_message", i) for i in range(7)])
    _RAN["EIO"] += 1
    assert result["fired"] and result["exit"] is None, _describe(result)
    assert result["violations"] == [], _describe(result)
