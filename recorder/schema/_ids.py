"""Ids a producer may leave out: a ``record_id`` made once by the sender, a ``schema_version`` by default.

Most A3CP modules' models have no ``record_id`` field and many records name
no version. The accept step already takes both from a frame's metadata when
the record lacks them, so they are filled in there: the ``Client`` (before
the first send, so a resend carries the same id) and the in-process
``Store`` make a ``record_id``; the recorder fills ``schema_version`` from
the type's ``default_version`` (Store and writer actors alike). Neither
changes the record's bytes: the id goes into the envelope, and into the
validated record only where the model declares the field.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from pydantic import BaseModel

from ..protocol import Record

__all__ = ["holds_ids", "holds_record_id", "new_record_id", "with_default_version"]


class _Ids(msgspec.Struct):
    """The two ids at the top level of a record (every other key is skipped unread)."""

    record_id: Any = None
    schema_version: Any = None


_decode_ids = msgspec.json.Decoder(_Ids).decode


def new_record_id() -> str:
    """A fresh record id: a random UUID in canonical text form."""
    return str(uuid.uuid4())


def holds_ids(obj: Any, raw: bytes) -> tuple[bool, bool]:
    """Whether the record itself holds a ``record_id`` and a ``schema_version`` (not null).

    ``obj`` is what the producer passed (a dict or model is looked at
    directly); JSON bytes are scanned at the top level only. Bytes that are
    no JSON object count as holding both: the accept step refuses them and
    says why.
    """
    if isinstance(obj, dict):
        return obj.get("record_id") is not None, obj.get("schema_version") is not None
    if isinstance(obj, BaseModel):
        return getattr(obj, "record_id", None) is not None, getattr(obj, "schema_version", None) is not None
    try:
        ids = _decode_ids(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return True, True
    return ids.record_id is not None, ids.schema_version is not None


def holds_record_id(obj: Any, raw: bytes) -> bool:
    """``holds_ids(obj, raw)[0]``, without decoding bytes that open with a top-level string
    ``record_id`` (the shape A3CP models serialise to: it is their first field)."""
    if not isinstance(obj, (dict, BaseModel)) and raw.startswith(b'{"record_id":"'):
        return True
    return holds_ids(obj, raw)[0]


def with_default_version(rec: Record, default_version: str) -> Record:
    """``rec`` with ``schema_version`` set to the type's default where neither frame nor record names one."""
    if default_version and rec.schema_version is None and not holds_ids(None, rec.record)[1]:
        rec.schema_version = default_version
    return rec
