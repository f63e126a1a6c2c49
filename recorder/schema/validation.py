"""Turn raw record bytes plus producer metadata into an accepted record, or a typed error.

Order of checks: size, JSON (UTF-8, no NaN, no lone surrogates, bounded
depth), denied fields, metadata agreement, version -> model, pydantic
validation, safe identifiers. The record is stored as the producer sent it
(values unchanged), re-encoded compactly so it can never span two lines.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, NamedTuple

import msgspec
import pydantic
from pydantic import BaseModel

from ._paths import check_identifier
from ..exceptions import DeniedFieldError, RecordTooLarge, ValidationError
from ..protocol import Record
from .registry import TypeSpec

__all__ = ["Verdict", "encode_record", "validate", "safe_json", "quarantine_copy"]

# Characters some line splitters treat as line ends; JSON allows them raw
# inside strings, so they are escaped on the way to disk.
_LINE_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))
_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})|(?<![0-9a-fA-F]{4})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def safe_json(obj: Any) -> bytes:
    """Encode ``obj`` as one line of JSON: compact, UTF-8, line breaks escaped."""
    data = msgspec.json.encode(obj)
    if b"\xe2\x80" in data or b"\xc2\x85" in data:
        for raw, esc in _LINE_BREAKS:
            data = data.replace(raw, esc)
    return data


class Verdict(NamedTuple):
    """What the rules decided about an accepted record: its envelope ids and the bytes to store."""

    version: str
    record_id: Any
    timestamp: Any
    user_id: str
    session_id: str | None
    source: Any
    stored: bytes  # the record as one compact JSON object


def _utf8_error_at(raw: bytes) -> int | None:
    """Offset of the first byte that is not valid UTF-8, or None.

    Computed from the bytes: decoders differ in what they raise for it
    (msgspec 0.22 a UnicodeDecodeError with a string-relative offset,
    0.23 a DecodeError with none)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start
    return None


def _decode(spec: TypeSpec, raw: bytes) -> dict[str, Any]:
    try:
        obj = msgspec.json.decode(raw)
    except RecursionError as e:
        raise ValidationError(spec.name, "$", "nested too deeply") from e
    except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as e:
        at = _utf8_error_at(raw)
        if at is not None:
            raise ValidationError(spec.name, "$", f"not valid UTF-8 at byte {at}") from e
        if _SURROGATE.search(raw):
            raise ValidationError(spec.name, "$", "lone UTF-16 surrogate escape is not valid Unicode") from e
        if re.search(rb"\b(NaN|-?Infinity)\b", raw):
            raise ValidationError(spec.name, "$", "NaN and Infinity are not JSON numbers") from e
        raise ValidationError(spec.name, "$", f"not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValidationError(spec.name, "$", f"record must be a JSON object, got {type(obj).__name__}")
    return obj


def _scan(spec: TypeSpec, obj: Any, path: str, depth: int, max_depth: int) -> None:
    """Walk the record for denied fields and excessive nesting."""
    if depth > max_depth:
        raise ValidationError(spec.name, path or "$", f"nested deeper than {max_depth} levels")
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            if k in spec.denied_fields:
                raise DeniedFieldError(spec.name, p, "field is denied: raw media never reaches the logs")
            _scan(spec, v, p, depth + 1, max_depth)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _scan(spec, v, f"{path}[{i}]", depth + 1, max_depth)
    elif isinstance(obj, str) and spec.denied_prefixes and obj[:_PREFIX_MAX].lower().startswith(spec.denied_prefixes):
        raise DeniedFieldError(spec.name, path, f"value starts with a denied prefix ({obj[:11]!r}...)")


# A \u escape of a printable ASCII character can spell a denied name or
# prefix that a plain byte test would not see (``"frame\u005fdata"``).
_ASCII_ESCAPE = re.compile(rb"\\u00[2-7][0-9a-fA-F]")
_PREFIX_MAX = 64  # longest denied prefix looked at (data: URLs are short)


def _hidden_denied(spec: TypeSpec, raw: bytes) -> bool:
    """A denied key or value in the bytes that the decoded record does not hold
    (JSON keeps a repeated key's last value only): refused, since the bytes are
    what a reader of the file would see."""
    keys = b"|".join(re.escape(n.encode()) for n in sorted(spec.denied_fields))
    if keys and re.search(b'"(?:' + keys + rb')"\s*:', raw):
        return True
    prefixes = b"|".join(re.escape(p.encode()) for p in spec.denied_prefixes)
    return bool(prefixes) and re.search(b'"(?:' + prefixes + b")", raw.lower()) is not None


def _scan_meta(spec: TypeSpec, meta: Record) -> None:
    """Metadata reaches the envelope too: the same denied names and prefixes apply."""
    texts: list[tuple[str, str]] = []
    if meta.action_id is not None:
        texts.append(("action_id", meta.action_id))
    for k, v in (meta.tags or {}).items():
        if k in spec.denied_fields:
            raise DeniedFieldError(spec.name, f"tags.{k}", "field is denied: raw media never reaches the logs")
        texts += [(f"tags.{k}", k), (f"tags.{k}", v)]
    for where, text in texts:
        if spec.denied_prefixes and text[:_PREFIX_MAX].lower().startswith(spec.denied_prefixes):
            raise DeniedFieldError(spec.name, where, f"value starts with a denied prefix ({text[:11]!r}...)")


def _deep(raw: bytes, max_depth: int) -> bool:
    # Cheap byte test first: most records are shallow, so the Python walk is
    # skipped on the hot path.
    return raw.count(b"{") + raw.count(b"[") > min(24, max_depth)


def _mentions_denied(spec: TypeSpec, raw: bytes) -> bool:
    """The bytes may spell a denied name or prefix (directly or through a \\u escape)."""
    if b"\\u00" in raw and _ASCII_ESCAPE.search(raw):
        return True
    if any(n in raw for n in spec.needles):
        return True
    return bool(spec.prefix_needles) and any(n in raw.lower() for n in spec.prefix_needles)


def _stored(raw: bytes, obj: dict[str, Any]) -> bytes:
    """The bytes to store: the producer's own when they fit on one line, else re-encoded."""
    if b"\n" in raw or b"\r" in raw or b"\xe2\x80\xa8" in raw or b"\xe2\x80\xa9" in raw or b"\xc2\x85" in raw:
        return safe_json(obj)  # pretty-printed, or a character some readers split lines at
    return raw.strip(b" \t")


def _pick(spec: TypeSpec, obj: dict[str, Any], meta: Record, name: str) -> Any:
    inner, outer = obj.get(name), getattr(meta, name)
    if inner is not None and outer is not None and inner != outer:
        raise ValidationError(spec.name, name, f"record says {inner!r} but metadata says {outer!r}")
    return inner if inner is not None else outer


def _pydantic_error(spec: TypeSpec, e: pydantic.ValidationError) -> ValidationError:
    errs = e.errors(include_url=False)
    first = errs[0]
    loc = ".".join(str(p) for p in first["loc"]) or "$"
    more = f" (+{len(errs) - 1} more errors)" if len(errs) > 1 else ""
    return ValidationError(spec.name, loc, f"{first['msg']}{more}")


def validate(spec: TypeSpec, raw: bytes, meta: Record, max_depth: int = 32) -> Verdict:
    """Validate one record against its type and declared version: the reference rules.

    The compiled accept step (recorder.schema.accept) takes a faster path
    where it can prove the same verdict, and this one everywhere else.

    Args:
        spec: the registered type.
        raw: the record as JSON bytes (an object).
        meta: the frame carrying it: metadata passed beside the record.
        max_depth: deepest nesting accepted.

    Raises:
        ValidationError: or a subclass, naming the field path and the reason.
    """
    if len(raw) > spec.config.max_record_bytes:
        raise RecordTooLarge(spec.name, len(raw), spec.config.max_record_bytes)
    obj = _decode(spec, raw)
    mentions = _mentions_denied(spec, raw)
    if mentions or _deep(raw, max_depth):
        _scan(spec, obj, "", 0, max_depth)
        if mentions and _hidden_denied(spec, raw):
            raise DeniedFieldError(spec.name, "$", "a denied field or value hides behind a repeated key")
    _scan_meta(spec, meta)
    version = _pick(spec, obj, meta, "schema_version")
    if not isinstance(version, str):
        raise ValidationError(spec.name, "schema_version", "missing: give it in the record or as metadata")
    record_id = _pick(spec, obj, meta, "record_id")
    if record_id is None:
        raise ValidationError(spec.name, "record_id", "missing: give it in the record or as metadata")
    user_id = _pick(spec, obj, meta, "user_id")
    session_id = _pick(spec, obj, meta, "session_id")
    source = _pick(spec, obj, meta, "source")
    for name, value in (("user_id", user_id), ("session_id", session_id)):
        if value == "":  # refused as empty before the model can call it missing or short
            check_identifier(spec.name, name, value)
    model = spec.model_for(version)
    candidate = obj
    given = {"record_id": record_id, "schema_version": version, "user_id": user_id, "session_id": session_id}
    fill = {k: v for k, v in given.items() if v is not None and obj.get(k) is None and k in model.model_fields}
    if fill:
        # ids passed as metadata stand in for the record's own when it has none, where the
        # model declares the field; otherwise they go into the envelope only
        candidate = {**obj, **fill}
    try:
        model.model_validate(candidate)
    except pydantic.ValidationError as e:
        raise _pydantic_error(spec, e) from e
    if user_id is None:
        raise ValidationError(spec.name, "user_id", "missing: give it in the record or as metadata")
    check_identifier(spec.name, "user_id", user_id)
    if session_id is not None:
        check_identifier(spec.name, "session_id", session_id)
    if "source" in spec.template.fields and source:
        check_identifier(spec.name, "source", source)
    # Bytes that mention a denied name or prefix the decoded record does not hold
    # (a repeated key keeps only its last value) are stored as decoded, never as sent.
    stored = safe_json(obj) if mentions else _stored(raw, obj)
    return Verdict(version, record_id, obj.get("timestamp"), user_id, session_id, source, stored)


def quarantine_copy(denied: frozenset[str], prefixes: tuple[str, ...], raw: bytes,
                    limit: int) -> tuple[str | None, int, str]:
    """A bounded copy of rejected input with denied values replaced by their size and hash.

    Args:
        denied: field names whose values never reach any log.
        prefixes: lower-case value prefixes (``data:image/``) treated the same.
        raw: the rejected input.
        limit: most bytes of the copy (cut at a character boundary).

    Returns (excerpt or None, size, sha256). Input that cannot be parsed but
    mentions a denied name or prefix keeps no bytes at all.
    """
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        low = raw.lower()
        if (any(f.encode() in raw for f in denied) or any(p.encode() in low for p in prefixes)
                or b"data:" in low or _ASCII_ESCAPE.search(raw)):
            return None, len(raw), digest
        return raw[:limit].decode("utf-8", "ignore"), len(raw), digest

    def redact(o: Any, depth: int = 0) -> Any:
        if depth > 64:
            return "<too deep>"
        if isinstance(o, dict):
            return {k: (_stub(v) if k in denied else redact(v, depth + 1)) for k, v in o.items()}
        if isinstance(o, list):
            return [redact(v, depth + 1) for v in o]
        if isinstance(o, str) and (o[:_PREFIX_MAX].lower().startswith(prefixes) or o[:5].lower() == "data:"):
            return _stub(o)
        return o

    text = safe_json(redact(obj))
    return text[:limit].decode("utf-8", "ignore"), len(raw), digest


def _stub(value: Any) -> dict[str, Any]:
    data = safe_json(value)
    return {"redacted": True, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _check_finite(obj: Any, path: str, stype: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValidationError(stype, path or "$", "NaN and Infinity are not JSON numbers")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{path}.{k}" if path else str(k), stype)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{path}[{i}]", stype)


def encode_record(record: BaseModel | dict[str, Any] | bytes, schema_type: str = "?") -> bytes:
    """JSON bytes of a record as the producer means it (models in JSON mode).

    Encoders turn NaN into null silently; a null in the output triggers the
    slow check, so such a record is refused instead of changed.

    Raises:
        ValidationError: the record cannot be represented as JSON.
    """
    if isinstance(record, bytes):
        return record
    try:
        if isinstance(record, BaseModel):
            data = record.model_dump_json(by_alias=True).encode()
            if b"null" in data:
                _check_finite(record.model_dump(), "", schema_type)
            return data
        data = safe_json(record)
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError) as e:
        raise ValidationError(schema_type, "$", f"cannot encode as JSON: {e}") from e
    if b"null" in data:
        _check_finite(record, "", schema_type)
    return data
