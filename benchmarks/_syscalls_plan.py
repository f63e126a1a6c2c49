"""The syscalls benchmark's plan: what the reference run did per thread role, and the fault cases drawn from it."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from ._syscalls_strace import GROUPS, ROLES

ACTIONS = ("kill", "EIO", "ENOSPC")
ERROR_GROUPS = ("write", "fdatasync")


@dataclass
class Reference:
    """What the workload does after READY, per thread role."""

    counts: dict[str, dict[str, int]]  # role -> group -> calls on the data root
    targets: dict[str, dict[str, list[str]]]  # role -> group -> path of each call (1st, 2nd, ...)
    paths: list[str]  # every path under the data root, relative, temp names with "{pid}"
    seconds: float

    def total(self, groups: Iterable[str] = tuple(GROUPS)) -> int:
        return sum(n for by in self.counts.values() for g, n in by.items() if g in groups)


@dataclass(frozen=True)
class Fault:
    """Where and how strace hits the recorder: the ``n``-th call of ``group`` by thread ``role``."""

    role: str
    group: str
    n: int
    action: str = "kill"  # kill (SIGKILL on entry), EIO or ENOSPC (the call fails, not run)
    repeat: bool = False  # errors: every call from the n-th on (when=N+), else the n-th only
    then_kill: str | None = None  # also SIGKILL at the first call of this group after attaching

    @property
    def kind(self) -> str:
        """kill (a kill at a syscall, the cut-back ones included), EIO or ENOSPC."""
        return "kill" if self.action == "kill" or self.then_kill else self.action

    @property
    def name(self) -> str:
        what = "kill" if self.action == "kill" else f"{self.action}{'+' if self.repeat else ''}"
        tail = f"+kill@{self.then_kill}" if self.then_kill else ""
        return f"{what}@{self.group}#{self.n}:{self.role}{tail}"

    def strace_args(self) -> list[str]:
        syscalls = list(GROUPS[self.group])
        what = "signal=KILL" if self.action == "kill" else f"error={self.action}"
        args = ["-e", f"inject={','.join(syscalls)}:{what}:when={self.n}{'+' if self.repeat else ''}"]
        if self.then_kill:
            syscalls += GROUPS[self.then_kill]
            args += ["-e", f"inject={','.join(GROUPS[self.then_kill])}:signal=KILL:when=1"]
        return ["-e", f"trace={','.join(syscalls)}", *args]


def full_plan(ref: Reference) -> list[Fault]:
    """Every N of every (role, group): kills at each syscall, errors at each write and fdatasync."""
    out: list[Fault] = []
    for g in GROUPS:
        for role in ROLES:
            if g == "ftruncate":  # cut-backs: kill at the ftruncate after the Nth fdatasync failed
                out += [Fault(role, "fdatasync", n, "EIO", then_kill="ftruncate")
                        for n in range(1, ref.counts[role]["fdatasync"] + 1)]
            else:
                out += [Fault(role, g, n) for n in range(1, ref.counts[role][g] + 1)]
    for action in ("EIO", "ENOSPC"):
        for repeat in (False, True):
            for g in ERROR_GROUPS:
                out += [Fault(role, g, n, action, repeat) for role in ROLES for n in range(1, ref.counts[role][g] + 1)]
    return out


#: error kinds: (action, from N on?, group)
ERROR_KINDS: list[tuple[str, bool, str]] = [(a, r, g) for a in ("EIO", "ENOSPC") for r in (False, True)
                                            for g in ERROR_GROUPS]


def sample_kill(ref: Reference, group: str, rng: random.Random) -> Fault | None:
    """A random kill at ``group``: any role's Nth call; for ftruncate, a cut-back after a batch's fdatasync failed."""
    if group == "ftruncate":
        pool = [(r, n) for r in ROLES if r.startswith("writer:")
                for n in _batch_calls(ref, r, "fdatasync", headers=False)]
        if not pool:
            return None
        role, n = rng.choice(pool)
        return Fault(role, "fdatasync", n, "EIO", then_kill="ftruncate")
    pool = [(r, n) for r in ROLES for n in range(1, ref.counts[r][group] + 1)]
    if not pool:
        return None
    role, n = rng.choice(pool)
    return Fault(role, group, n)


def sample_error(ref: Reference, action: str, repeat: bool, group: str, rng: random.Random) -> Fault | None:
    """A random error at a writer's own batch call (so the case checks that a failed batch is never acknowledged).

    A write is drawn from the writer's first segment only: once a seal has
    run, the writer saves the state file (more writes) when it notices the
    sealer finished, which depends on timing, so later ordinals move between
    runs. fdatasync ordinals do not move (the state file is fsync'd). The
    full sweep tries every N and says what each case hit.
    """
    pool = [(r, n) for r in ROLES if r.startswith("writer:")
            for n in _batch_calls(ref, r, group, first_segment=group == "write")]
    if not pool:
        return None
    role, n = rng.choice(pool)
    return Fault(role, group, n, action, repeat)


def sample_plan(ref: Reference, seed: int, per_kind: int = 1) -> list[Fault]:
    """``per_kind`` random faults for each kill group and each error kind (ERROR_KINDS)."""
    out: list[Fault | None] = []
    for k in range(per_kind):
        for g in GROUPS:
            out.append(sample_kill(ref, g, random.Random(f"{seed}:{k}:kill:{g}")))
        for action, repeat, g in ERROR_KINDS:
            out.append(sample_error(ref, action, repeat, g, random.Random(f"{seed}:{k}:{action}:{repeat}:{g}")))
    return sorted({f for f in out if f is not None}, key=lambda f: f.name)


def _batch_calls(ref: Reference, role: str, group: str, headers: bool = True,
                 first_segment: bool = False) -> list[int]:
    """Ordinals (1-based) of the role's calls of ``group`` on its own data journals.

    ``headers=False`` leaves out each journal's first call (its header's);
    ``first_segment`` keeps only the calls on the first journal it wrote.
    """
    stype = role.split(":", 1)[1]
    out: list[int] = []
    seen: list[str] = []
    for n, p in enumerate(ref.targets[role][group], 1):
        if not (p.endswith(".jsonl") and not p.startswith("_recorder/") and f"/{stype}_" in "/" + p):
            continue
        if first_segment and seen and p != seen[0]:
            break
        if headers or p in seen:
            out.append(n)
        if p not in seen:
            seen.append(p)
    return out
