"""Check sealed segments against their manifests, their neighbours and the catalog.

What is checked, each problem named at the file at fault:

- every manifest: readable, sitting beside the segment it names; its journal
  (while present) has the digest, record count, chain head and ``prev`` the
  manifest recorded; a converted segment's Parquet file exists, has the
  recorded digest and as many rows as records;
- chains across segments: each segment's header ``prev`` continues the
  previous segment's chain head (taken from the tombstone when retention
  deleted that segment); a segment that is gone with neither manifest nor
  tombstone is missing;
- the catalog: its own chain, and that it agrees with the manifests and
  tombstones on disk (a manifest that differs from the catalog's copy is
  blamed when the catalog's chain is intact; a catalog that lags behind the
  disk is "out of date");
- hidden temporary files (``.NAME.tmp-PID``) left by interrupted writes.

The catalog's copy of a manifest is hash-chained, the manifest file is not:
data files are compared with the catalog's copy when the catalog is intact,
so an altered manifest is blamed on itself, not on the data it describes.
Meant for a data root no recorder is writing: while one runs, a segment
caught between two sealing steps shows as a lagging catalog.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..storage import INTERNAL_DIR, formats
from ..storage.catalog import CATALOG_NAME, MANIFEST_SUFFIX, TOMBSTONE_SUFFIX, read_catalog
from ._verify import Problem, verify_file

__all__ = ["check_segments"]

CATALOG = f"{INTERNAL_DIR}/{CATALOG_NAME}"
_TEMP_PATTERNS = (".*.tmp-*", ".catalog.rebuild")
_CHUNK = 1 << 20
#: fields a published conversion adds to a manifest (the catalog's ``seal`` copy lacks them): the
#: state, the converted file's entry (under its format's name), whether the journal was kept
_CONVERSION_FIELDS = {"state", "journal_kept", *(n for n in formats.names() if formats.get(n).converts)}


@dataclass
class _Journal:
    """What a journal file holds, read once."""

    sha256: str
    records: int
    header: dict[str, Any]
    last_h: str | None


@dataclass
class _Seg:
    """One segment of a stream as found on disk and in the catalog."""

    rel: str  # journal path relative to the data root
    ref: dict[str, Any] | None = None  # the trusted manifest (catalog copy if intact, else the file)
    tomb: dict[str, Any] | None = None  # the tombstone's copy of the manifest
    blame: str = ""  # file blamed when this segment's prev_head is wrong
    journal: _Journal | None = None


@dataclass
class _Catalog:
    """The catalog folded to its latest state per segment."""

    present: bool = False
    intact: bool = True
    live: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # path -> (line, manifest)
    deleted: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # path -> (line, manifest)


class _Report:
    """Problems, at most one per file (the first found), as verify reports them."""

    def __init__(self) -> None:
        self.found: dict[str, Problem] = {}
        self.stale: list[str] = []  # why the catalog is out of date, one entry per segment

    def add(self, path: Path | str, reason: str, line: int = -1, offset: int = -1, where: str = "") -> None:
        key = str(path)
        if key not in self.found:
            self.found[key] = Problem(key, line, offset, reason, where)


def check_segments(root: str) -> list[Problem]:
    """Check the sealed segments under ``root`` (a data root or a directory in one).

    Args:
        root: the directory to check; manifests name paths relative to the
            data root, found as the nearest directory holding ``_recorder``.

    Returns:
        The first problem of each file at fault, sorted by path; empty when
        every segment, link and catalog entry agrees.
    """
    scope = Path(root)
    base = _data_root(scope)
    prefix = "" if scope == base else scope.relative_to(base).as_posix() + "/"
    report = _Report()

    manifests: dict[str, Path] = {}  # journal rel -> manifest file
    tombstones: dict[str, Path] = {}  # journal rel -> tombstone file
    internal = base / INTERNAL_DIR
    for dirpath, dirnames, filenames in os.walk(scope):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames):
            if name.startswith(".") and any(fnmatch.fnmatchcase(name, p) for p in _TEMP_PATTERNS):
                report.add(here / name, "leftover temporary file of an interrupted write "
                                        "(safe to delete while no recorder runs)", where="whole file")
        if here == internal or internal in here.parents:
            continue  # internal logs: temp files only (verify checks the journals)
        rel_dir = here.relative_to(base).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        for name in filenames:
            if name.startswith("."):
                continue
            if name.endswith(MANIFEST_SUFFIX):
                manifests[rel_dir + name[: -len(MANIFEST_SUFFIX)] + ".jsonl"] = here / name
            elif name.endswith(TOMBSTONE_SUFFIX):
                tombstones[rel_dir + name[: -len(TOMBSTONE_SUFFIX)] + ".jsonl"] = here / name

    catalog = _load_catalog(base, report, expected=bool(manifests or tombstones))
    segs: dict[str, _Seg] = {}
    for rel, mpath in sorted(manifests.items()):
        segs[rel] = _check_manifest(base, rel, mpath, catalog, report)
    for rel, tpath in sorted(tombstones.items()):
        seg = segs.setdefault(rel, _Seg(rel))
        _check_tombstone(base, rel, tpath, rel in manifests, catalog, seg, report)
    if catalog.present:
        for rel, (line, m) in sorted(catalog.live.items()):
            if not rel.startswith(prefix) or rel in manifests:
                continue
            if rel in tombstones:
                report.stale.append(f"{rel} was deleted (tombstone on disk) but the catalog lists it as live")
            else:
                data = formats.data_path(m)
                report.add(base / data, f"segment {m.get('segment')} of stream {m.get('stream')} is missing: "
                                        f"the catalog lists it (line {line}) but neither its manifest nor a "
                                        "tombstone is on disk", where="file missing")
                segs.setdefault(rel, _Seg(rel, ref=m, blame=str(base / data)))
        for rel, (line, _) in sorted(catalog.deleted.items()):
            if rel.startswith(prefix) and rel not in tombstones:
                report.add(base / (_stem(rel) + TOMBSTONE_SUFFIX),
                           f"the catalog records deleting this segment (line {line}) but its tombstone is missing",
                           where="file missing")
    _check_streams(base, segs, report)
    if report.stale:
        more = f" (and {len(report.stale) - 1} more)" if len(report.stale) > 1 else ""
        report.add(base / CATALOG, f"catalog is out of date: {report.stale[0]}{more}; "
                                   "run recorder catalog --rebuild", where="entries")
    return sorted(report.found.values(), key=lambda p: p.path)


def _data_root(scope: Path) -> Path:
    for p in (scope, *scope.parents):
        if (p / INTERNAL_DIR).is_dir():
            return p
    return scope


def _stem(rel: str) -> str:
    return formats.stem(rel)


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        doc = msgspec.json.decode(path.read_bytes())
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        return None, f"not valid JSON: {e}"
    except OSError as e:
        return None, f"cannot be read: {e.strerror or e}"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    return doc, ""


# -- the catalog ---------------------------------------------------------------------

def _load_catalog(base: Path, report: _Report, expected: bool) -> _Catalog:
    path = base / CATALOG
    cat = _Catalog()
    if not path.is_file():
        if expected and (base / INTERNAL_DIR).is_dir():
            report.add(path, "catalog is missing although sealed segments exist; run recorder catalog --rebuild",
                       where="file missing")
        return cat
    cat.present = True
    bad = verify_file(path)
    if bad is not None:
        cat.intact = False
        report.add(path, bad.reason, bad.line, bad.offset)
    index = read_catalog(base)
    if index is not None:
        cat.live = {rel: (seg.line, seg.manifest) for rel, seg in index.segments.items() if seg.deleted is None}
        cat.deleted = index.deletions
    return cat


def _differs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _fields(names: list[str]) -> str:
    return ("field " if len(names) == 1 else "fields ") + ", ".join(names)


# -- one manifest -------------------------------------------------------------------

def _check_manifest(base: Path, rel: str, mpath: Path, catalog: _Catalog, report: _Report) -> _Seg:
    seg = _Seg(rel, blame=str(mpath))
    disk, why = _read_json(mpath)
    cat = catalog.live.get(rel)
    if disk is None:
        report.add(mpath, f"manifest is {why}" if why.startswith("not") else f"manifest {why}", where="whole file")
        seg.ref = cat[1] if cat is not None and catalog.intact else None
    else:
        seg.ref = disk
        if disk.get("path") != rel:
            report.add(mpath, f"manifest describes {disk.get('path')!r} but sits beside {rel!r}", where="field path")
        if catalog.present:
            if cat is None:
                if rel in catalog.deleted:
                    line = catalog.deleted[rel][0]
                    if catalog.intact and not (base / (_stem(rel) + TOMBSTONE_SUFFIX)).exists():
                        report.add(mpath, f"the catalog records deleting this segment (line {line}) "
                                          "but its manifest is still on disk and no tombstone is",
                                   where="whole file")
                else:
                    report.stale.append(f"it lacks {rel} (manifest on disk)")
            elif cat[1] != disk:
                fields = _differs(cat[1], disk)
                if _lags(cat[1], disk):
                    report.stale.append(f"{rel} was converted to Parquet after its last catalog entry")
                elif catalog.intact:
                    report.add(mpath, f"manifest differs from its catalog entry (line {cat[0]}) in "
                                      f"{', '.join(fields)}: the manifest was altered", where=_fields(fields))
                    seg.ref = cat[1]
                else:
                    report.add(base / CATALOG, f"catalog entry (line {cat[0]}) differs from {rel}'s manifest "
                                               f"in {', '.join(fields)}", cat[0], where=_fields(fields))
    if seg.ref is not None:
        try:
            _check_data(base, rel, seg, report)
        except (KeyError, TypeError) as e:
            report.add(mpath, f"manifest lacks a valid field: {e}", where=f"field {e}")
    return seg


def _lags(cat: dict[str, Any], disk: dict[str, Any]) -> bool:
    """True when the catalog holds the manifest as sealed and the disk as converted since."""
    if cat.get("state") != "sealed" or disk.get("state") != "converted":
        return False
    return all(cat.get(k) == disk.get(k) for k in cat.keys() | disk.keys() if k not in _CONVERSION_FIELDS)


def _read_journal(path: Path) -> _Journal:
    h = hashlib.sha256()
    newlines = 0
    first = b""
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            newlines += chunk.count(b"\n")
            if not first:
                first = chunk.split(b"\n", 1)[0]
            tail = (tail + chunk)[-(_CHUNK * 2):]
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    header: dict[str, Any] = {}
    last_h: str | None = None
    try:
        decoded = msgspec.json.decode(first)
        header = decoded if isinstance(decoded, dict) else {}
        last = msgspec.json.decode(lines[-1]) if lines and lines[-1] else {}
        last_h = last.get("h") if isinstance(last, dict) else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    return _Journal(h.hexdigest(), max(0, newlines - 1), header, last_h)


def _check_data(base: Path, rel: str, seg: _Seg, report: _Report) -> None:
    m = seg.ref
    assert m is not None
    state = m["state"]
    jpath = base / rel
    if state not in ("sealed", "converted"):
        report.add(seg.blame, f"manifest has unknown state {state!r}", where="field state")
        return
    if jpath.is_file():
        j = seg.journal = _read_journal(jpath)
        wrong = []
        if j.sha256 != m["sha256"]:
            wrong.append(f"sha256 {j.sha256[:16]}... but the manifest says {str(m['sha256'])[:16]}...")
        if j.records != m["records"]:
            wrong.append(f"{j.records} records but the manifest says {m['records']}")
        if j.last_h is not None and m.get("chain_head") and j.last_h != m["chain_head"]:
            wrong.append("its last line's hash is not the manifest's chain_head")
        if j.header.get("prev") != m.get("prev_head") and "prev" in j.header:
            wrong.append("its header's prev is not the manifest's prev_head")
        if wrong:
            bad = verify_file(jpath)
            detail = f" ({bad.reason})" if bad is not None else ""
            report.add(jpath, "sealed journal changed after it was sealed: " + "; ".join(wrong) + detail,
                       bad.line if bad else -1, bad.offset if bad else -1, where="whole file")
    elif state == "sealed" or m.get("journal_kept"):
        if not (base / (_stem(rel) + TOMBSTONE_SUFFIX)).exists():
            report.add(jpath, "sealed journal is missing (no tombstone records its deletion)", where="file missing")
    fmt = formats.of(m)
    pq_path = base / fmt.data_name(_stem(rel))
    if state == "converted":
        info = formats.converted(m)
        pq_path = base / str(info["path"])
        if not pq_path.is_file():
            report.add(pq_path, "Parquet file of a converted segment is missing (no tombstone records its deletion)",
                       where="file missing")
            return
        digest = _sha256(pq_path)
        if digest != info["sha256"]:
            report.add(pq_path, f"Parquet file changed after it was published: sha256 {digest[:16]}... "
                                f"but the manifest says {str(info['sha256'])[:16]}...", where="whole file")
            return
        rows, where, why = fmt.inspect(pq_path)
        if rows is None:
            report.add(pq_path, f"Parquet file is unreadable: {why}", where=where)
        elif rows != m["records"] or rows != info.get("rows", rows):
            report.add(pq_path, f"Parquet file has {rows} rows but the manifest says {m['records']} records",
                       where=where)
    elif fmt.converts and pq_path.is_file():
        # published but the manifest not yet rewritten: recovery redoes the
        # conversion, but a file under a final name must still be whole
        rows, where, why = fmt.inspect(pq_path)
        if rows is None:
            report.add(pq_path, f"Parquet file under its final name is unreadable: {why}", where=where)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- tombstones -------------------------------------------------------------------------

def _check_tombstone(base: Path, rel: str, tpath: Path, has_manifest: bool, catalog: _Catalog,
                     seg: _Seg, report: _Report) -> None:
    doc, why = _read_json(tpath)
    m = doc.get("manifest") if doc is not None else None
    if doc is None or not isinstance(m, dict):
        report.add(tpath, f"tombstone is {why or 'missing its manifest'}", where="field manifest" if doc else "whole file")
        return
    seg.tomb = m
    if not seg.blame:
        seg.blame = str(tpath)
    if m.get("path") != rel:
        report.add(tpath, f"tombstone describes {m.get('path')!r} but sits beside {rel!r}", where="field manifest.path")
    remains = [p.name for p in (base / rel, base / formats.of(m).data_name(_stem(rel)), base / (_stem(rel) + MANIFEST_SUFFIX))
               if p.exists()]
    if remains:
        report.add(tpath, f"deletion was interrupted: the tombstone is written but {', '.join(remains)} remain",
                   where="whole file")
    if not catalog.present:
        return
    entry = catalog.deleted.get(rel)
    if entry is None:
        if not has_manifest:  # a lagging catalog with a manifest on disk is reported by the manifest check
            report.stale.append(f"it lacks the deletion of {rel} (tombstone on disk)")
    elif entry[1].get("sha256") != m.get("sha256"):
        if catalog.intact:
            report.add(tpath, f"tombstone differs from the catalog's deletion record (line {entry[0]}) in "
                              f"{', '.join(_differs(entry[1], m))}: the tombstone was altered",
                       where="manifest " + _fields(_differs(entry[1], m)))
            seg.tomb = entry[1]
        else:
            report.add(base / CATALOG, f"catalog deletion record (line {entry[0]}) differs from "
                                       f"{rel}'s tombstone", entry[0])


# -- chains across segments ---------------------------------------------------------------

def _check_streams(base: Path, segs: dict[str, _Seg], report: _Report) -> None:
    streams: dict[str, dict[int, _Seg]] = {}
    sample: dict[str, tuple[str, int]] = {}
    for seg in segs.values():
        m = seg.ref or seg.tomb
        if m is None:
            continue
        stream, n = m.get("stream"), m.get("segment")
        if not isinstance(stream, str) or "{segment}" not in stream or not isinstance(n, int):
            continue
        streams.setdefault(stream, {})[n] = seg
        if stream not in sample or n < sample[stream][1]:
            sample[stream] = (str(m.get("path", "")), n)
    for stream, by_n in sorted(streams.items()):
        render = _renderer(stream, *sample[stream])
        top = max(by_n)
        # segments with a journal but no manifest yet: the open one, or one still sealing
        for n in range(0, top + 2):
            if n in by_n:
                continue
            jrel = render(n, ".jsonl")
            if jrel is not None and (base / jrel).is_file():
                by_n[n] = _Seg(jrel, blame=str(base / jrel), journal=_read_journal(base / jrel))
        top = max(by_n)
        for n in range(0, top):
            if n not in by_n:
                where = render(n, None) or stream.replace("{segment}", str(n))
                report.add(base / where, f"segment {n} of stream {stream} is missing "
                                         "(neither manifest nor tombstone nor data)", where="file missing")
        broken: dict[int, tuple[str, str, str]] = {}  # segment -> (its prev, the head before it, file)
        for n in range(1, top + 1):
            cur, prev = by_n.get(n), by_n.get(n - 1)
            if cur is None or prev is None:
                continue
            want = _head(prev)
            got, where = _prev_of(base, cur)
            if want and got and got != want:
                broken[n] = (got, want, where)
        for n, (got, want, where) in sorted(broken.items()):
            if n - 1 in broken:
                continue  # a foreign segment n-1 breaks both of its links: it alone is reported
            either = f"; segment {n + 1} does not continue it either" if n + 1 in broken else ""
            why = (f"chain broken across segments: segment {n} continues {got[:16]}... but "
                   f"segment {n - 1} ends at {want[:16]}...{either}")
            if where.endswith(".jsonl"):
                report.add(where, why + " (its header's prev)", 1, 0)
            else:
                report.add(where, why, where="field prev_head")


def _head(seg: _Seg) -> str | None:
    m = seg.ref or seg.tomb
    if m is not None:
        return m.get("chain_head") or None
    return seg.journal.last_h if seg.journal is not None else None


def _prev_of(base: Path, seg: _Seg) -> tuple[str | None, str]:
    if seg.journal is not None and "prev" in seg.journal.header:
        return seg.journal.header.get("prev"), str(base / seg.rel)
    m = seg.ref or seg.tomb
    return (m.get("prev_head") if m is not None else None), seg.blame


def _renderer(stream: str, sample_path: str, sample_n: int) -> Any:
    """A function (segment, extension or None) -> path relative to the data root."""
    pre, _, post = stream.partition("{segment}")
    ext = post.rsplit(".", 1)[1] if "." in post else ""
    post_j = post if post.endswith(".jsonl") else post[: -len(ext) - 1] + ".jsonl"
    width = 0
    if sample_path.startswith(pre) and sample_path.endswith(post_j):
        digits = sample_path[len(pre): len(sample_path) - len(post_j)]
        if digits.isdigit() and len(digits) > len(str(sample_n)):
            width = len(digits)

    def render(n: int, suffix: str | None) -> str | None:
        text = f"{pre}{n:0{width}d}{post}" if width else f"{pre}{n}{post}"
        if suffix is None:
            return text
        return text if text.endswith(suffix) else text.rsplit(".", 1)[0] + suffix

    return render
