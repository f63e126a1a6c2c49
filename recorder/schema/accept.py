"""The accept step: raw record bytes plus their frame -> the stored line's parts, or a typed rejection.

One ``Acceptor`` per schema type, compiled when the recorder loads its
registry, is the only way a record gets in: the in-process ``Store`` and the
service's writer actors call the same one. It tries the typed fast path
(``recorder.schema.fast``) on records whose bytes need no second look, and
otherwise applies the reference rules (``recorder.schema.validation.validate``),
whose verdict and message always win. The envelope's fields are built from a
cached per-stream part plus the per-record ids, ready to be joined once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET

from ._paths import MISSING, check_identifier
from ..exceptions import RecorderError, RecordTooLarge, _Signal
from ..protocol import Record
from .registry import TypeSpec
from .validation import Verdict, _scan_meta, safe_json, validate
from .fast import Fast, derive

__all__ = ["Accepted", "Acceptor"]

_CACHE_MAX = 4096  # envelope parts kept per type (streams, versions)


@dataclass(slots=True)
class Accepted:
    """A record that passed, ready for the writer to number, chain and append."""

    spec: TypeSpec
    envelope: bytes  # the envelope's fields from schema_type to tags, as JSON members
    record: bytes  # the record as one compact JSON object
    path_values: dict[str, str]  # template fields from the record (not to be changed)
    user_id: str
    session_id: str | None
    ends_session: bool  # an audit event saying its session ended


class Acceptor:
    """The compiled accept step of one schema type.

    Args:
        spec: the registered type.
        max_depth: deepest nesting accepted (``recorder.max_depth``).
        session_end: the event type that ends a session, for audit types.
        fast: try the typed fast path (off: the reference rules only).
    """

    def __init__(self, spec: TypeSpec, max_depth: int, session_end: str | None, fast: bool = True) -> None:
        self.spec = spec
        self.max_depth = max_depth
        self.max_bytes = spec.config.max_record_bytes
        self.with_source = "source" in spec.template.fields
        #: counters for `recorder stats`: fast path, reference rules, and
        #: records the fast path refused but the reference accepted
        self.counts = {"fast": 0, "reference": 0, "disagreements": 0}
        self.paths: dict[str, str] = {}  # model name -> "fast" or why not
        self._fast: dict[type[Any], Fast] = {}
        for _, model in spec.models:
            derived = derive(model)
            self.paths[model.__name__] = "fast" if isinstance(derived, Fast) else derived
            if isinstance(derived, Fast) and fast:
                self._fast[model] = derived
        self._last: Fast | None = next(iter(self._fast.values()), None)
        names = b"|".join(re.escape(n[1:-1]) for n in spec.needles)  # one scan for all, quoted
        self._names = re.compile(b'"(?:' + names + b')"') if names else None
        common = _common_prefix(spec.prefix_needles) if spec.prefix_needles else b""
        self._prefixes = (common,) if len(common) > 3 else spec.prefix_needles  # one scan for b'"data:
        end = None
        if session_end is not None and any("event_type" in m.model_fields for _, m in spec.models):
            end = re.compile(rb'"event_type"\s*:\s*"' + re.escape(session_end.encode()) + rb'"')
        self._end = end
        self._heads: dict[str, bytes] = {}  # version -> '"schema_type":..,"schema_version":..'
        self._tails: dict[tuple[Any, ...], tuple[bytes, dict[str, str]]] = {}

    def __call__(self, rec: Record) -> Accepted:
        """Accept ``rec.record`` with the metadata of its frame.

        Raises:
            ValidationError: or a subclass, naming the field path and the reason.
        """
        raw = rec.record
        if len(raw) > self.max_bytes:
            raise RecordTooLarge(self.spec.name, len(raw), self.max_bytes)
        tried = False
        if self._last is not None and self._clean(raw):
            verdict = self._fast_verdict(raw, rec)
            if verdict is not None:
                self.counts["fast"] += 1
                return self._accepted(verdict, rec)
            tried = True
        verdict = validate(self.spec, raw, rec, self.max_depth)
        self.counts["reference"] += 1
        if tried:
            self.counts["disagreements"] += 1
        return self._accepted(verdict, rec)

    # -- the fast path -----------------------------------------------------
    def _clean(self, raw: bytes) -> bool:
        """Bytes that need no second look: ASCII without escapes or line breaks, no denied name
        or prefix, shallow enough; anything else takes the reference rules."""
        if not raw.isascii() or b"\\" in raw or b"\n" in raw or b"\r" in raw:
            return False
        if self._names is not None and self._names.search(raw) is not None:
            return False
        if self._prefixes:
            low = raw.lower()
            for p in self._prefixes:
                if p in low:
                    return False
        return True

    def _fast_verdict(self, raw: bytes, rec: Record) -> Verdict | None:
        """The verdict from the typed decode, or None where the reference must decide."""
        fast = self._last
        assert fast is not None
        if fast.depth > self.max_depth and raw.count(b"{") + raw.count(b"[") > self.max_depth:
            return None
        try:
            obj = fast.decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            # another version's model may fit (a 1.1 field the 1.0 Struct refuses): try the others
            for other in self._fast.values():
                if other is not fast:
                    try:
                        obj, fast = other.decoder.decode(raw), other
                        break
                    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                        continue
            else:
                return None
        version = getattr(obj, "schema_version", UNSET)  # a model may not declare it: metadata names it
        if version is UNSET or version is None:
            version = rec.schema_version
        elif rec.schema_version is not None and rec.schema_version != version:
            return None
        if type(version) is not str:
            return None
        try:
            model = self.spec.model_for(version)
            if model is not fast.model:  # another version's model: decode with its own Struct
                found = self._fast.get(model)
                if found is None:
                    return None
                self._last = fast = found
                obj = fast.decoder.decode(raw)
            if fast.verify is not None:
                fast.verify(obj)
            record_id = getattr(obj, "record_id", UNSET)
            user_id = getattr(obj, "user_id", UNSET)
            session_id = getattr(obj, "session_id", UNSET)
            if rec.record_id is not None or record_id is UNSET or record_id is None:
                record_id = _id(fast, record_id, rec.record_id, "record_id")
            if rec.user_id is not None or user_id is UNSET or user_id is None:
                user_id = _id(fast, user_id, rec.user_id, "user_id")
            if rec.session_id is not None or session_id is UNSET:
                session_id = _id(fast, session_id, rec.session_id, "session_id")
            source = obj.source if fast.has_source else None
            if source is None or source is UNSET:
                source = rec.source
            elif rec.source is not None and rec.source != source:
                return None
            if record_id is None or user_id is None:
                return None
            if rec.action_id is not None or rec.tags is not None:
                _scan_meta(self.spec, rec)
        except (msgspec.DecodeError, msgspec.ValidationError, RecorderError, ValueError, TypeError,
                AttributeError, KeyError, RecursionError, _Declined):
            return None  # a check refused it (or could not run): the reference rules decide
        timestamp = obj.timestamp if fast.has_timestamp else None
        if timestamp is UNSET:
            timestamp = None
        return Verdict(version, record_id, timestamp, user_id, session_id, source, raw.strip(b" \t"))

    # -- the envelope ----------------------------------------------------------
    def _accepted(self, v: Verdict, rec: Record) -> Accepted:
        user_id, session_id, source = v.user_id, v.session_id, v.source
        head = self._heads.get(v.version)
        if head is None:
            if len(self._heads) > _CACHE_MAX:
                self._heads.clear()
            head = self._heads[v.version] = (b'"schema_type":' + safe_json(self.spec.name)
                                            + b',"schema_version":' + safe_json(v.version))
        key = (user_id, session_id, source, rec.action_id) if rec.tags is None else None
        try:
            cached = self._tails.get(key) if key is not None else None
        except TypeError:  # an unhashable source
            key, cached = None, None
        if cached is None:
            # Path parts, checked once per stream, in the reference's order (the reference path
            # has checked them already; the fast path has not, and raises the same error here).
            check_identifier(self.spec.name, "user_id", user_id)
            if session_id is not None:
                check_identifier(self.spec.name, "session_id", session_id)
            values = {"schema_type": self.spec.name, "user_id": user_id, "session_id": session_id or MISSING}
            if self.with_source:
                values["source"] = check_identifier(self.spec.name, "source", source) if source else MISSING
            tail = safe_json({"user_id": user_id, "session_id": session_id, "source": source,
                              "action_id": rec.action_id, "tags": rec.tags})[1:-1]
            cached = (b"," + tail, values)
            if key is not None:
                if len(self._tails) > _CACHE_MAX:
                    self._tails.clear()
                self._tails[key] = cached
        envelope = b"".join((head, b',"record_id":', _json(v.record_id), b',"timestamp":', _json(v.timestamp),
                             cached[0]))
        ends = self._end is not None and session_id is not None and self._end.search(v.stored) is not None
        return Accepted(self.spec, envelope, v.stored, cached[1], user_id, session_id, ends)


def _json(value: Any) -> bytes:
    """``safe_json(value)``, without the encoder for the common case: a plain ASCII string."""
    if type(value) is str and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return b'"' + value.encode() + b'"'
    return safe_json(value)


class _Declined(_Signal):
    """The fast path cannot decide this record."""


def _id(fast: Fast, inner: Any, outer: Any, name: str) -> Any:
    """An id from the record or, where it has none, from the metadata (checked as the model would)."""
    if inner is UNSET or inner is None:
        if outer is None:
            return None
        kind = fast.id_types[name]
        if kind is not None:  # a field of the model: the metadata value must fit it
            msgspec.convert(outer, kind)
        return outer
    if outer is not None and outer != inner:
        raise _Declined  # the reference names the disagreement
    return inner


def _common_prefix(words: tuple[bytes, ...]) -> bytes:
    first, last = min(words), max(words)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]
