"""Log lines of the ``recorder`` command and its processes: stdlib logging to stderr, plain or JSON.

Every line has the UTC time, the level and the component (the logger's
name: ``recorder.supervisor``, ``recorder.service``, ``recorder.store``,
``recorder.read``, ``recorder.cli``, ``recorder.metrics``). Plain lines read
``2026-01-31T12:00:00.123Z INFO recorder.supervisor: message``; JSON lines
are one object each with ``time``, ``level``, ``component``, ``message``,
``pid`` and any structured ``fields`` the call passed as
``extra={"fields": {...}}``. The library itself configures nothing: a
program that uses ``Client`` or ``Store`` keeps its own logging setup.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import IO, Any, Literal

import msgspec

__all__ = ["LEVELS", "LogFormat", "configure", "unconfigure"]

LogFormat = Literal["plain", "json"]
LEVELS = ("debug", "info", "warning", "error")
_ROOT = "recorder"


def _time(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class _Plain(logging.Formatter):
    """``TIME LEVEL component: message`` (fields appended as key=value)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _Json(logging.Formatter):
    """One JSON object per line, for log shippers (Vector, Fluent Bit, Loki)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {"time": _time(record), "level": record.levelname, "component": record.name,
                               "message": record.getMessage(), "pid": record.process or os.getpid()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            obj.update({k: v for k, v in fields.items() if k not in obj})
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(obj, enc_hook=str).decode()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``stream``, or to whatever ``sys.stderr`` is at the time of each line."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream or sys.stderr)
        self._follow = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow:
            self.stream = sys.stderr
        super().emit(record)


def configure(fmt: LogFormat = "plain", level: str = "info", stream: IO[str] | None = None) -> None:
    """Send the ``recorder.*`` loggers to stderr (or ``stream``) in ``fmt``, from ``level`` up.

    Called by the command line and the recorder process; calling it again
    replaces the earlier setup, and :func:`unconfigure` removes it.
    """
    unconfigure()
    logger = logging.getLogger(_ROOT)
    handler = _Handler(stream)
    handler.setFormatter(_Json() if fmt == "json" else _Plain())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def unconfigure() -> None:
    """Undo :func:`configure`: the ``recorder`` loggers propagate to the program's own setup again."""
    logger = logging.getLogger(_ROOT)
    for h in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
