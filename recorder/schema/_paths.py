"""Safe identifiers, destination templates, and their collision check."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime, timezone

from ..exceptions import UnsafeIdentifier

#: What an identifier that becomes a path part may look like: a plain name,
#: starting with a letter or digit, so ``..``, hidden files, separators, NUL,
#: control characters and the recorder's own ``_recorder`` folder are out.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MISSING = "none"

_DATE_FIELDS = {"date", "year", "month", "day", "hour"}
_ID_FIELDS = {"user_id", "session_id", "schema_type", "source"}
_SEGMENT = {"segment"}
FIELDS = _DATE_FIELDS | _ID_FIELDS | _SEGMENT


def check_identifier(schema_type: str, field: str, value: object) -> str:
    """Return ``value`` if it is a safe path part, else raise UnsafeIdentifier."""
    if not isinstance(value, str):
        raise UnsafeIdentifier(schema_type, field, f"must be a string, got {type(value).__name__}")
    if not _ID.fullmatch(value):
        if not value:
            raise UnsafeIdentifier(schema_type, field, "is empty: a name needs at least one character")
        if len(value) > 128:
            why = "longer than 128 characters"
        elif value in (".", "..") or "/" in value or "\\" in value:
            why = "path separators and '.'/'..' are not allowed"
        elif any(ord(c) < 32 or ord(c) == 127 for c in value):
            why = "control characters are not allowed"
        else:
            why = "must match [A-Za-z0-9][A-Za-z0-9._-]*"
        raise UnsafeIdentifier(schema_type, field, f"{value[:40]!r}: {why}")
    return value


@dataclass(frozen=True)
class Template:
    """A destination path template such as ``logs/{user_id}/{session_id}.jsonl``."""

    text: str
    fields: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Parse and check a template; raises ValueError with the reason."""
        if not text or text.startswith("/") or "\\" in text:
            raise ValueError("must be a relative path with '/' separators")
        parts = text.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError("empty, '.' or '..' path parts are not allowed")
        if parts[0].startswith("_"):
            raise ValueError("top-level names starting with '_' are reserved for the recorder")
        fields: set[str] = set()
        for literal, name, spec, conv in string.Formatter().parse(text):
            if literal and not re.fullmatch(r"[A-Za-z0-9._/-]*", literal):
                raise ValueError(f"literal text {literal!r} may only use [A-Za-z0-9._-/]")
            if name is None:
                continue
            if name not in FIELDS:
                raise ValueError(f"unknown placeholder {{{name}}}; known: {sorted(FIELDS)}")
            if conv or (spec and name != "segment"):
                raise ValueError(f"placeholder {{{name}}} takes no conversion or format spec")
            fields.add(name)
        return cls(text, frozenset(fields))

    def render(self, values: dict[str, str | int]) -> str:
        """Fill the template; values must already be checked identifiers."""
        return self.text.format_map(values)

    def pattern(self, schema_type: str) -> list[str]:
        """Tokens for the collision check: one char literal, or ``*`` for a field."""
        tokens: list[str] = []
        for literal, name, _spec, _conv in string.Formatter().parse(self.text):
            tokens.extend(literal)
            if name == "schema_type":
                tokens.extend(schema_type)
            elif name is not None:
                tokens.append("*")
        return tokens


def _id_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "._-")


def can_collide(a: list[str], b: list[str]) -> bool:
    """True if two token patterns can render to the same path.

    ``*`` stands for one or more identifier characters (never ``/``); the
    check walks both patterns together, so it is exact for these patterns.
    """
    # Expand '*' into 'W' (one char) followed by 'S' (zero or more).
    def expand(p: list[str]) -> list[str]:
        out: list[str] = []
        for t in p:
            out.extend(("W", "S") if t == "*" else (t,))
        return out

    pa, pb = expand(a), expand(b)
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(pa) and j == len(pb):
            return True
        ta = pa[i] if i < len(pa) else None
        tb = pb[j] if j < len(pb) else None
        if ta == "S":
            todo.append((i + 1, j))
        if tb == "S":
            todo.append((i, j + 1))
        if ta is None or tb is None:
            continue
        # consume one character matching both tokens
        wild_a, wild_b = ta in ("W", "S"), tb in ("W", "S")
        if wild_a and wild_b:
            ok = True
        elif wild_a:
            ok = _id_char(tb)
        elif wild_b:
            ok = _id_char(ta)
        else:
            ok = ta == tb
        if ok:
            todo.append((i if ta == "S" else i + 1, j if tb == "S" else j + 1))
    return False


def date_fields(received_ns: int) -> dict[str, str]:
    """Date placeholders, from the recorder's receive time in UTC."""
    t = datetime.fromtimestamp(received_ns / 1e9, tz=timezone.utc)
    return {
        "date": t.strftime("%Y-%m-%d"),
        "year": t.strftime("%Y"),
        "month": t.strftime("%m"),
        "day": t.strftime("%d"),
        "hour": t.strftime("%H"),
    }
