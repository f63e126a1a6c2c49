"""Where a record of one type goes: its stream, and the journal path of a stream's segment.

A *stream* is the type's path template filled with everything but
``{segment}`` (a marker stands in for it); its segments are numbered from
0. A template without ``{segment}`` has one file per stream, the stream
itself.
"""

from __future__ import annotations

from typing import Any

from . import formats
from ..schema._paths import date_fields
from ..schema.registry import TypeSpec

__all__ = ["Routes"]


class _Marker:
    """Stands in for the segment number, so a stream's files share one key."""

    def __format__(self, spec: str) -> str:
        return "\0"


_SEG = _Marker()


class Routes:
    """Path values -> stream -> journal path, for one schema type (rendered once per stream)."""

    def __init__(self, spec: TypeSpec) -> None:
        self.template = spec.template
        self.rotating = "segment" in spec.template.fields
        self._dated = bool(spec.template.fields & {"date", "year", "month", "day", "hour"})
        self._streams: dict[tuple[Any, ...], str] = {}  # path values -> stream (rendered template)

    def values(self, path_values: dict[str, Any], received_ns: int) -> dict[str, Any]:
        """The values a record's path is rendered from: its own, plus the date fields of its arrival."""
        if not self._dated:
            return path_values  # shared by a stream's records: never changed
        values: dict[str, Any] = dict(path_values)
        values.update(date_fields(received_ns))
        return values

    def stream(self, values: dict[str, Any]) -> str:
        """The stream of ``values`` (the journal path itself when the type does not rotate)."""
        key = tuple(values.values())
        stream = self._streams.get(key)
        if stream is None:
            # rendering a template costs more than the rest of routing: once per stream
            if len(self._streams) > 4096:
                self._streams.clear()
            if self.rotating:
                stream = self.template.text.format_map({**values, "segment": _SEG})
            else:
                stream = self.template.render({**values, "segment": 0})
            self._streams[key] = stream
        return stream

    def journal_rel(self, stream: str, seg: int) -> str:
        """The journal path of segment ``seg`` of ``stream``."""
        return formats.journal_path(stream.replace("\0", self.seg_text(seg)))

    def seg_text(self, seg: int) -> str:
        """``seg`` as the template writes it (``{segment:04d}`` -> ``0007``)."""
        spec = self.template.text.split("{segment", 1)[1].split("}", 1)[0].lstrip(":")
        return format(seg, spec or "d")

    def parse(self, rel: str) -> tuple[str, int]:
        """(stream, segment) of a journal path of this type.

        The segment number is the last run of digits in the file name, so a
        template must not put digits after ``{segment}``.
        """
        if not self.rotating:
            return rel, 0
        d, _, name = rel.rpartition("/")
        end = len(name)
        while end > 0 and not name[end - 1].isdigit():
            end -= 1
        start = end
        while start > 0 and name[start - 1].isdigit():
            start -= 1
        ext = self.template.text.rsplit(".", 1)[1]
        rest = name[end:].rsplit(".", 1)[0] + "." + ext
        return (d + "/" if d else "") + name[:start] + "\0" + rest, int(name[start:end] or 0)
