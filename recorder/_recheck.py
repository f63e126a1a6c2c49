"""Check a recording against today's registry before switching to it; re-record what still passes.

Every stored record is validated as the recorder would validate it now:
the new registry maps its (type, version) to a model, and the same accept
step (``recorder.schema.accept``) runs on the record's stored bytes. Nothing is
written unless ``into`` names a new data root: then every record goes
through ``Store.record`` there (passing ones are recorded, failing ones
quarantined), with its original ids, timestamp, producer and producer
sequence, and provenance tags naming where it came from.

A write-side tool (it records through ``Store``), so it sits above the
store, not in ``recorder.reading``; ``recorder.recheck`` is its public name.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._progress import Progress
from .exceptions import UsageError, ValidationError
from .protocol import Record
from .reading.replay import Replay
from .schema.accept import Acceptor
from .schema.config import Config, load_config
from .schema.registry import Registry
from .storage import INTERNAL_DIR
from .store import Store

__all__ = ["Failure", "TypeResult", "RecheckResult", "recheck", "check_into", "SOURCE_TAGS"]

#: Tags added to every re-recorded record: the source data root, and the record's seq and receive time there.
SOURCE_TAGS = ("recorder.source_root", "recorder.source_seq", "recorder.source_received")


@dataclass
class Failure:
    """One stored record the new registry refuses."""

    seq: int
    record_id: Any
    schema_version: Any
    code: str
    field: str
    reason: str


@dataclass
class TypeResult:
    """Counts of one schema type, the first failures, and failures per field path."""

    checked: int = 0
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    fields: Counter[str] = field(default_factory=Counter)

    @property
    def passed(self) -> int:
        return self.checked - self.failed


@dataclass
class RecheckResult:
    """What ``recheck`` found, per schema type (and what it recorded with ``into``)."""

    root: str
    config: str
    into: str | None = None
    types: dict[str, TypeResult] = field(default_factory=dict)

    @property
    def checked(self) -> int:
        return sum(t.checked for t in self.types.values())

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.types.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``recorder recheck --json``)."""
        return {"root": self.root, "config": self.config, "into": self.into, "checked": self.checked,
                "failed": self.failed,
                "types": {name: {"checked": t.checked, "passed": t.passed, "failed": t.failed,
                                 "fields": dict(t.fields.most_common()),
                                 "failures": [vars(f) for f in t.failures]}
                          for name, t in sorted(self.types.items())}}

    def lines(self) -> list[str]:
        """The report as text lines."""
        out = [f"recheck: {self.checked} records of {len(self.types)} types against {self.config}: "
               f"{self.checked - self.failed} pass, {self.failed} fail",
               f"{'schema type':<16}{'checked':>9}{'passed':>9}{'failed':>9}  failures by field"]
        for name, t in sorted(self.types.items()):
            by_field = ", ".join(f"{f}: {n}" for f, n in t.fields.most_common(5))
            out.append(f"{name:<16}{t.checked:>9}{t.passed:>9}{t.failed:>9}  {by_field}".rstrip())
        for name, t in sorted(self.types.items()):
            if t.failures:
                out.append(f"first failures of {name}:")
                out += [f"  seq {f.seq}  record_id {f.record_id}  version {f.schema_version}  {f.code}  "
                        f"{f.field}: {f.reason}" for f in t.failures]
        if self.into is not None:
            out.append(f"into {self.into}: {self.checked - self.failed} recorded, {self.failed} quarantined "
                       f"({INTERNAL_DIR}/quarantine.jsonl)")
        return out


def check_into(root: str | Path, into: str | Path, name: str = "into") -> None:
    """Refuse a target that is not a new data root apart from ``root``.

    Raises:
        UsageError: (a ValueError) naming ``name``: ``into`` is ``root``, inside it or around it, or not empty.
    """
    src, dst = os.path.realpath(root), os.path.realpath(into)
    if dst == src or dst.startswith(src + os.sep) or src.startswith(dst + os.sep):
        raise UsageError(f"{name} {into}", f"must be a new data root outside the recording ({root})")
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise UsageError(f"{name} {into}", "exists and is not an empty directory; re-record into a new data root")


def recheck(root: str | Path, config: Config | str | Path | None, *, into: str | Path | None = None,
            types: str | Iterable[str] | None = None, user: str | None = None, session: str | None = None,
            show: int = 5, progress: bool = False) -> RecheckResult:
    """Validate every stored record against the models ``config`` maps its (type, version) to.

    Args:
        root: the recording (a data root), read only.
        config: the new registry (a Config, a TOML path, or None for the packaged one).
        into: a new data root: re-record every record there through ``Store.record``
            (passing ones recorded, failing ones quarantined), keeping record ids,
            timestamps, producer ids and producer sequences, and adding the tags
            ``SOURCE_TAGS``. Without it nothing is written.
        types, user, session: only these records.
        show: failures kept per type (the first ones, in recorder order).
        progress: show progress on stderr.

    Raises:
        ConfigError: the config is wrong.
        ValueError: ``into`` is not a new data root apart from ``root``.
        RecorderError: ``root`` is not a directory.
        StorageFull: the new data root is full (with ``into``).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    registry = Registry.from_config(cfg)
    # the recorder's own accept step, compiled for the new registry
    acceptors = {name: Acceptor(spec, cfg.recorder.max_depth, cfg.recorder.session_end_event)
                 for name, spec in registry.specs.items()}
    rp = Replay(root, types=types, user=user, session=session, speed=None)
    result = RecheckResult(str(root), cfg.source, None if into is None else str(into))
    source_root = os.path.realpath(root)
    store = None
    if into is not None:
        check_into(root, into)
        store = Store(cfg, data_root=into)
        store.event("recheck_started", {"source_root": source_root, "config": cfg.source,
                                        "config_digest": cfg.digest})
    bar = Progress(sum(p.stat().st_size for p in rp.files), "recheck", enabled=progress)
    try:
        for item in iter(rp._next_item, None):
            bar.advance(item.size)
            s = item.stored()
            res = result.types.setdefault(s.schema_type, TypeResult())
            res.checked += 1
            raw = bytes(s.record)
            meta: dict[str, Any] = {"schema_version": s.schema_version, "record_id": s.record_id,
                                    "user_id": s.user_id, "session_id": s.session_id, "source": s.source,
                                    "action_id": s.action_id, "tags": s.tags}
            try:
                if store is None:
                    acceptor = acceptors.get(s.schema_type) or acceptors[registry.get(s.schema_type).name]
                    acceptor(Record("recheck", 0, s.schema_type, raw, **meta))
                else:
                    meta["tags"] = {**(s.tags or {}), SOURCE_TAGS[0]: source_root, SOURCE_TAGS[1]: str(s.seq),
                                    SOURCE_TAGS[2]: s.received}
                    store.record(raw, schema_type=s.schema_type,
                                 producer=s.producer if isinstance(s.producer, str) else "inproc",
                                 pseq=s.pseq if isinstance(s.pseq, int) else 0, **meta)
            except ValidationError as e:  # Store.record has quarantined it
                res.failed += 1
                res.fields[e.field] += 1
                if len(res.failures) < show:
                    res.failures.append(Failure(s.seq, s.record_id, s.schema_version, e.code, e.field, e.reason))
    finally:
        bar.done()
        if store is not None:
            try:
                store.event("recheck_finished", {"source_root": source_root, "checked": result.checked,
                                                 "recorded": result.checked - result.failed,
                                                 "quarantined": result.failed})
            finally:
                store.close()
    return result
