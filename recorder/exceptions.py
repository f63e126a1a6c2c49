"""The whole error tree of `recorder`, and nothing else.

Constructors take structured fields and build the message, so callers and
tests can look at ``err.field`` or ``err.offset`` instead of parsing text.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ConfigError",
    "ConversionError",
    "CorruptionError",
    "DeniedFieldError",
    "DurabilityError",
    "NotARecording",
    "PublishError",
    "RecorderIdConflict",
    "RecordTooLarge",
    "RecorderError",
    "RecorderUnavailable",
    "RejectedError",
    "SegmentChanged",
    "StorageFull",
    "UnknownSchemaError",
    "UnsafeIdentifier",
    "Unwritable",
    "UsageError",
    "ValidationError",
]


class RecorderError(Exception):
    """Base of every error this package raises on purpose.

    Each class names its ``code``, the short stable code used on the wire
    and in the quarantine log: ``class StorageFull(_AtPath, code="storage_full")``.
    """

    code: ClassVar[str] = "error"

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code


class ConfigError(RecorderError, code="config"):
    """A config file or registry entry is wrong; names the file and the key."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        super().__init__(f"{path}: {key}: {reason}")


class ValidationError(RecorderError, ValueError, code="invalid"):
    """A record does not match its schema; names the field path and reason."""

    def __init__(self, schema_type: str, field: str, reason: str) -> None:
        self.schema_type = schema_type
        self.field = field
        self.reason = reason
        super().__init__(f"{schema_type}: field {field!r}: {reason}")


class ConversionError(ValidationError):
    """A recorded value that cannot take its Parquet column's type; ``path`` grows as it unwinds.

    Raised inside the conversion with the schema type unknown (``"?"``); the
    conversion reports it as a ``ValidationError`` naming the type, the
    line's ``seq`` and the field path.
    """

    def __init__(self, reason: str, *path: str) -> None:
        self.path: list[str] = list(path)
        super().__init__("?", "".join(path) or "$", reason)

    def __str__(self) -> str:
        return f"{self.schema_type}: field {''.join(self.path) or '$'!r}: {self.reason}"


class UnknownSchemaError(ValidationError, code="unknown_schema"):
    """The schema type is not registered, or its MAJOR version is unknown."""


class DeniedFieldError(ValidationError, code="denied_field"):
    """A field that must never reach disk (raw frames, audio, data: URLs)."""


class UnsafeIdentifier(ValidationError, code="unsafe_identifier"):
    """An identifier that becomes a path part is not a plain, safe name."""


class RecordTooLarge(ValidationError, code="too_large"):
    """A record is larger than its type's ``max_record_bytes``."""

    def __init__(self, schema_type: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(schema_type, "$", f"record is {size} bytes, limit is {limit}")


class CorruptionError(RecorderError, code="corrupt"):
    """A file on disk is damaged; names the file, line and byte offset."""

    def __init__(self, path: str, line: int, offset: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: line {line} (byte {offset}): {reason}")


class _AtPath(RecorderError):
    """Base of the errors about one path: ``path`` and ``reason``, shown as ``path: reason``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StorageFull(_AtPath, code="storage_full"):
    """The disk or a configured storage limit is full; records are refused."""


class NotARecording(_AtPath, code="not_a_recording"):
    """A path given to read, verify, export or catalog does not exist or holds no recording."""


class SegmentChanged(_AtPath, code="segment_changed"):
    """A sealed journal no longer matches the sha256 its manifest recorded: the sealer leaves it unconverted."""


class UsageError(RecorderError, ValueError, code="usage"):
    """A function or command was given an argument it cannot use; names the argument."""

    def __init__(self, argument: str, reason: str) -> None:
        self.argument = argument
        self.reason = reason
        super().__init__(f"{argument}: {reason}")


class DurabilityError(RecorderError, code="durability"):
    """A write or fsync failed; what was written since the last sync is unknown."""

    def __init__(self, path: str, op: str, errno: int | None, reason: str) -> None:
        self.path = path
        self.op = op
        self.errno = errno
        self.reason = reason
        super().__init__(f"{path}: {op} failed: {reason}")


class Unwritable(DurabilityError, code="unwritable"):
    """One destination (a directory or file) cannot be written: nothing went there; others go on.

    Raised for errors that belong to a path (EACCES, EPERM, EROFS, ENOTDIR,
    ENAMETOOLONG, a symlink, a name the filesystem refuses, a file removed
    while open), never for device-wide ones (EIO, ENOSPC). The service
    refuses that destination's records with code ``unwritable`` and tries
    the destination again later.
    """


class RecorderUnavailable(RecorderError, code="unavailable"):
    """The client cannot hand a record to a recorder in time (down or slow)."""


class ClientClosed(RecorderUnavailable, code="closed"):
    """``record()`` on a Client after ``close()``: nothing would deliver it (as a closed file refuses writes)."""


class RejectedError(RecorderError, code="rejected"):
    """The recorder refused records a producer sent; carries each rejection."""

    def __init__(self, rejections: list[tuple[int, str, str, str]]) -> None:
        #: (producer sequence, code, field, reason) per refused record
        self.rejections = rejections
        first = rejections[0]
        more = f" (+{len(rejections) - 1} more)" if len(rejections) > 1 else ""
        super().__init__(
            f"record #{first[0]} rejected ({first[1]}): field {first[2]!r}: {first[3]}{more}"
        )


class PublishError(RecorderError, code="publish"):
    """Publication of sealed segments into the lake failed; names the table (or store) and why.

    Never raised on the acknowledgement path: only the publisher process and
    ``recorder publish`` raise it.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"{target}: {reason}")


class RecorderIdConflict(PublishError, code="recorder_id_conflict"):
    """A table holds this ``recorder_id`` with a different chain history (a cloned device image)."""

    def __init__(self, table: str, recorder_id: str, number: int, reason: str) -> None:
        self.table = table
        self.recorder_id = recorder_id
        self.number = number
        super().__init__(table, f"recorder_id {recorder_id!r}, segment {number}: {reason}; "
                                "give this data root its own [publish] recorder_id")
        self.reason = reason


class _Signal(RecorderError, code="internal"):
    """Base of private control-flow signals (``schema.accept._Declined``, ``schema.fast._NotDerivable``).

    Each is raised and caught inside one module and never reaches a caller;
    it derives from the tree only so that every exception class is in it.
    """
