"""recorder: validated, ordered, hash-chained, crash-safe recording of A3CP records."""

from __future__ import annotations

from .client import Client
from .config import Config, load_config
from .exceptions import (
    ConfigError,
    CorruptionError,
    DeniedFieldError,
    DurabilityError,
    NotARecording,
    RecorderError,
    RecorderUnavailable,
    RecordTooLarge,
    RejectedError,
    StorageFull,
    UnknownSchemaError,
    UnsafeIdentifier,
    UsageError,
    ValidationError,
)
from .reader import Problem, read, read_table, verify
from .registry import Registry
from .store import Store

__all__ = [
    "Client",
    "Config",
    "ConfigError",
    "CorruptionError",
    "DeniedFieldError",
    "DurabilityError",
    "NotARecording",
    "Problem",
    "RecordTooLarge",
    "RecorderError",
    "RecorderUnavailable",
    "Registry",
    "RejectedError",
    "StorageFull",
    "Store",
    "UnknownSchemaError",
    "UnsafeIdentifier",
    "UsageError",
    "ValidationError",
    "load_config",
    "read",
    "read_table",
    "verify",
]

__version__ = "0.1.1"
