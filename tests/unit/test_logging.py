"""Log lines carry time, level and component, as plain text or JSON, and leave a program's own logging alone."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from recorder import _logging

PLAIN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING recorder\.supervisor: restart #2 in 0\.40 s")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A stream the recorder's loggers write to for the test; the setup is undone afterwards."""
    s = io.StringIO()
    yield s
    _logging.unconfigure()


def test_plain_lines_have_time_level_component_and_message(stream: io.StringIO) -> None:
    """A plain line reads `TIME LEVEL component: message`, with structured fields appended as key=value."""
    _logging.configure("plain", "info", stream)
    log = logging.getLogger("recorder.supervisor")
    log.warning("restart #%d in %.2f s", 2, 0.4)
    log.debug("not shown at level info")
    log.info("ready", extra={"fields": {"pid": 42}})
    first, second = stream.getvalue().splitlines()
    assert PLAIN.fullmatch(first), first
    assert second.endswith(" INFO recorder.supervisor: ready pid=42"), second


def test_json_lines_are_one_object_each(stream: io.StringIO) -> None:
    """With the JSON format each line is one object with time, level, component, message, pid and fields."""
    _logging.configure("json", "debug", stream)
    logging.getLogger("recorder.service").info("recording into %s", "/data", extra={"fields": {"types": 5}})
    (line,) = stream.getvalue().splitlines()
    obj = json.loads(line)
    assert obj["level"] == "INFO" and obj["component"] == "recorder.service"
    assert obj["message"] == "recording into /data" and obj["types"] == 5 and isinstance(obj["pid"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["time"])


def test_unconfigure_gives_the_loggers_back_to_the_program(stream: io.StringIO,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """After unconfigure() (the command returned) records propagate to the program's handlers again."""
    _logging.configure("plain", "info", stream)
    _logging.unconfigure()
    with caplog.at_level(logging.WARNING, logger="recorder"):
        logging.getLogger("recorder.read").warning("skipped a malformed line")
    assert stream.getvalue() == "" and [r.getMessage() for r in caplog.records] == ["skipped a malformed line"]
