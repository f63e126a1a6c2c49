"""The crash soak's checker: a data root no recorder is writing against the producers' histories."""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._soak_producer import ACKED, REJECTED, UNKNOWN

TEMP_PATTERN = ".*.tmp-*"  # an interrupted atomic write (_durable)


@dataclass
class Report:
    """What :func:`check` found: totals, and one line per violation (empty when all is well)."""

    violations: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    #: schema type -> segments, largest (records, bytes), limits, segments over a limit
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    trail: str = ""  # the audit trail against manifests and catalog, in one line

    def fail(self, kind: str, message: str, example: Any = None) -> None:
        self.violations.append(f"{kind}: {message}")
        if example is not None:
            self.examples.setdefault(kind, []).append(example)


def load_histories(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The producers' history files."""
    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]


def temp_files(root: str | Path) -> list[str]:
    """Files left by an interrupted atomic write (``.NAME.tmp-PID``), relative to ``root``."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if fnmatch.fnmatch(p.name, TEMP_PATTERN))


def _first_copies(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for p in seqs:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def check(root: str | Path, histories: list[dict[str, Any]], limit: int = 20,
          limits: dict[str, tuple[int, int]] | None = None) -> Report:
    """Check a data root no recorder is writing against the producers' histories.

    Args:
        root: the data root.
        histories: what each producer sent and how each record ended (see :func:`produce`).
        limit: examples kept per kind of violation.
        limits: schema type -> (rotate_records, rotate_bytes) no segment may pass (0: none).

    Returns:
        A Report; ``violations`` is empty when every check passed.
    """
    from recorder import read, verify
    from recorder.storage._trail import check_trail, segment_sizes

    rep = Report()
    # (producer, pseq) -> [(record_id, schema type, seq)]; (producer, type) -> pseqs in seq order
    disk: dict[tuple[str, int], list[tuple[str, str, int]]] = {}
    per_type: dict[tuple[str, str], list[int]] = {}
    per_producer: dict[str, list[int]] = {}
    stored = 0
    for e in read(root):
        stored += 1
        prod, pseq, stype = str(e.get("producer")), int(e.get("pseq") or 0), str(e.get("schema_type"))
        rid = str(e.get("record_id") or (e.get("record") or {}).get("record_id"))
        disk.setdefault((prod, pseq), []).append((rid, stype, int(e.get("seq") or 0)))
        per_type.setdefault((prod, stype), []).append(pseq)
        per_producer.setdefault(prod, []).append(pseq)
    known = {h["producer"] for h in histories}
    strangers = sorted({p for p, _ in disk} - known)
    if strangers:
        rep.fail("stranger", f"records of {len(strangers)} producers no history names are on disk", strangers[:limit])

    counts = Counter[str]()
    for h in histories:
        prod = h["producer"]
        if h.get("error"):
            rep.fail("liveness", f"producer {h['index']} ({prod}): {h['error']}")
        for pseq, rid, stype, bad, state, code in h["records"]:
            counts["sent"] += 1
            counts[state] += 1
            found = disk.get((prod, pseq), [])
            if len(found) > 1:
                counts["duplicates"] += len(found) - 1
                if len(rep.examples.get("duplicate", [])) < limit:
                    rep.examples.setdefault("duplicate", []).append(
                        {"producer": prod, "pseq": pseq, "state": state, "copies": found})
            if any(f[0] != rid or f[1] != stype for f in found):
                counts["mismatched"] += 1
                if counts["mismatched"] <= limit:
                    rep.fail("mismatch", f"{prod} #{pseq}: on disk as {found}, sent as {rid} {stype}")
            if state == ACKED:
                if bad:
                    counts["rejection_lost"] += 1
                    if counts["rejection_lost"] <= limit:
                        rep.examples.setdefault("rejection_lost", []).append({"producer": prod, "pseq": pseq})
                elif not found:
                    counts["lost"] += 1
                    if counts["lost"] <= limit:
                        rep.examples.setdefault("lost", []).append(
                            {"producer": prod, "pseq": pseq, "record_id": rid, "schema_type": stype})
                else:
                    counts["acked_on_disk"] += 1
            elif state == REJECTED:
                if found:
                    counts["rejected_on_disk"] += 1
                    rep.examples.setdefault("rejected_on_disk", []).append({"producer": prod, "pseq": pseq})
                if not bad:
                    counts["unexpected_rejections"] += 1
                    if counts["unexpected_rejections"] <= limit:
                        rep.examples.setdefault("unexpected_rejection", []).append(
                            {"producer": prod, "pseq": pseq, "code": code})
            elif found:
                counts["unknown_on_disk"] += 1
    if counts["duplicates"]:
        rep.fail("duplicate", f"{counts['duplicates']} extra copies of records on disk")
    if counts["lost"]:
        rep.fail("lost", f"{counts['lost']} acknowledged records are not on disk")
    if counts["rejection_lost"]:
        rep.fail("rejection_lost", f"{counts['rejection_lost']} invalid records were acknowledged as durable")
    if counts["rejected_on_disk"]:
        rep.fail("rejected_on_disk", f"{counts['rejected_on_disk']} rejected records are on disk")
    if counts["unexpected_rejections"]:
        rep.fail("unexpected_rejection", f"{counts['unexpected_rejections']} valid records were rejected")
    if counts[UNKNOWN]:
        rep.fail("liveness", f"{counts[UNKNOWN]} records were never acknowledged "
                             f"({counts['unknown_on_disk']} of them are on disk)")

    # Order within each (producer, schema type), and across the producer's types in read() order
    # (docs/FORMAT.md, "Ordering"), over first copies (a duplicate's second copy is counted above).
    for (prod, stype), seqs in per_type.items():
        seqs = _first_copies(seqs)
        back = [(a, b) for a, b in zip(seqs, seqs[1:]) if b < a]
        if back:
            counts["out_of_order"] += len(back)
            rep.fail("order", f"{prod} {stype}: {len(back)} times a record follows a higher pseq",
                     {"producer": prod, "schema_type": stype, "pairs": back[:limit]})
    for prod, seqs in per_producer.items():
        firsts = _first_copies(seqs)
        back = [(a, b) for a, b in zip(firsts, firsts[1:]) if b < a]
        if back:
            counts["cross_type_inversions"] += len(back)
            rep.fail("order", f"{prod}: {len(back)} times read() yields a record after a higher pseq "
                              "of another type", {"producer": prod, "pairs": back[:limit]})

    files, problems = verify([root])
    counts["verified_files"] = files
    counts["verify_problems"] = len(problems)
    for p in problems[:limit]:
        rep.fail("verify", str(p))
    if len(problems) > limit:
        rep.fail("verify", f"... and {len(problems) - limit} more problems")
    temps = temp_files(root)
    counts["temp_files"] = len(temps)
    if temps:
        rep.fail("temp_files", f"{len(temps)} left: {temps[:limit]}")

    # Segment sizes against their limits: a backlog resent after a restart must not overfill one.
    for stype, segs in segment_sizes(root).items():
        max_records, max_bytes = (limits or {}).get(stype, (0, 0))
        over = [(p, n, b) for p, n, b in segs
                if (max_records and n > max_records) or (max_bytes and b > max_bytes and n > 1)]
        rep.segments[stype] = {"segments": len(segs), "largest_records": max((n for _, n, _ in segs), default=0),
                               "largest_bytes": max((b for _, _, b in segs), default=0),
                               "rotate_records": max_records, "rotate_bytes": max_bytes, "over_limit": len(over)}
        if over:
            rep.fail("segment_limit", f"{stype}: {len(over)} of {len(segs)} segments over rotate_records="
                     f"{max_records} / rotate_bytes={max_bytes}", over[:limit])
    # The audit log: one segment_sealed event per sealed segment (manifest, tombstone, catalog), none else.
    trail = check_trail(root)
    rep.trail = trail.summary()
    counts["trail_problems"] = len(trail.problems)
    for p in trail.problems[:limit]:
        rep.fail("audit_trail", p)
    counts["stored"] = stored
    rep.totals = dict(counts)
    return rep
