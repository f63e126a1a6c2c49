"""recorder: validated, ordered, hash-chained, crash-safe recording of A3CP records.

The public API, loaded on first use (PEP 562): a producer that imports
``recorder.Client`` does not load the storage engine, and ``recorder.read``
does not load the write side (docs/ARCHITECTURE.md). The errors are loaded at
once: they are small and every part raises them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._env import __version__ as __version__
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

if TYPE_CHECKING:
    from ._recheck import recheck
    from .client import Client
    from .reading.reader import Problem, read, read_table, verify
    from .reading.replay import replay
    from .schema.config import Config, load_config
    from .schema.fast import check as fast_check
    from .schema.fast import implied as fast_implied
    from .schema.registry import Registry
    from .store import Store

#: module -> the public names it gives ("attribute as name" where they differ)
_LAZY_BY_MODULE = {
    ".client": ["Client"], ".store": ["Store"], "._recheck": ["recheck"],
    ".schema.config": ["Config", "load_config"], ".schema.registry": ["Registry"],
    ".schema.fast": ["check as fast_check", "implied as fast_implied"],
    ".reading.reader": ["Problem", "read", "read_table", "verify"], ".reading.replay": ["replay"],
}
#: public name -> (module, attribute)
_LAZY = {name.split(" as ")[-1]: (module, name.split(" as ")[0])
         for module, names in _LAZY_BY_MODULE.items() for name in names}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'recorder' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
