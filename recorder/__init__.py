"""recorder: validated, ordered, hash-chained, crash-safe recording of A3CP records."""

from __future__ import annotations

from ._env import __version__ as __version__
from .client import Client
from .schema.config import Config, load_config
from .exceptions import (
    ClientClosed,
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
from .reading.reader import Problem, read, read_table, verify
from ._recheck import recheck
from .schema.registry import Registry
from .reading.replay import replay
from .schema.fast import check as fast_check
from .schema.fast import implied as fast_implied
from .store import Store

__all__ = [
    "Client",
    "ClientClosed",
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
    "fast_check",
    "fast_implied",
    "load_config",
    "read",
    "read_table",
    "recheck",
    "replay",
    "verify",
]
