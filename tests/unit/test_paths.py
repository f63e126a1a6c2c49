"""Path safety: identifiers that become path parts, templates, the collision check, symlinks."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder import DurabilityError, Store, UnsafeIdentifier, ValidationError
from recorder.schema._paths import Template, can_collide, check_identifier
from recorder.testing import sample_message

UNSAFE = [
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("../../etc", id="traversal"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x1fb", id="control"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("/etc/passwd", id="absolute"),
    pytest.param("x" * 129, id="too-long"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("_recorder", id="leading-underscore"),
    pytest.param("-rf", id="leading-dash"),
    pytest.param("", id="empty"),
    pytest.param("a b", id="space"),
    pytest.param("caf\u00e9", id="non-ascii"),
    pytest.param("\uff0e\uff0e", id="fullwidth-dots"),
    pytest.param("a\u2028b", id="line-separator"),
]


@pytest.mark.parametrize("value", UNSAFE)
def test_unsafe_identifier_is_refused_naming_the_field(value: str) -> None:
    """check_identifier refuses anything but a plain name, naming the field."""
    with pytest.raises(UnsafeIdentifier) as info:
        check_identifier("a3cp_message", "session_id", value)
    assert info.value.field == "session_id"
    assert info.value.code == "unsafe_identifier"


@pytest.mark.parametrize("value", [1, None, b"abc", ["a"]])
def test_non_string_identifier_is_refused(value: object) -> None:
    """An identifier that is not a str is refused."""
    with pytest.raises(UnsafeIdentifier):
        check_identifier("t", "user_id", value)


@pytest.mark.parametrize("value", ["elias01", "sess_2025-06-15_elias01", "a", "A.b-c_d", "x" * 128, "0"])
def test_plain_identifier_is_accepted(value: str) -> None:
    """A plain name of up to 128 characters is returned unchanged."""
    assert check_identifier("t", "user_id", value) == value


@pytest.mark.parametrize(
    ("why", "value"),
    [
        ("longer than 128", "x" * 200),
        ("separators", "../x"),
        ("control characters", "a\x01"),
    ],
)
def test_unsafe_identifier_reason_says_why(why: str, value: str) -> None:
    """The reason names the kind of problem."""
    with pytest.raises(UnsafeIdentifier) as info:
        check_identifier("t", "user_id", value)
    assert why in info.value.reason


@pytest.mark.parametrize("field", ["user_id", "session_id"])
@pytest.mark.parametrize(
    "value",
    ["..", "../../etc", "a/b", "a\\b", "a\x00b", "a\x01b", "/abs", ".hidden"],
)
def test_store_refuses_unsafe_identifiers_and_writes_nothing(tmp_path: Path, field: str, value: str) -> None:
    """A record whose user_id or session_id is not a safe name is refused and nothing lands outside logs."""
    root = tmp_path / "data"
    with Store(None, data_root=root) as s:
        with pytest.raises(UnsafeIdentifier) as info:
            s.record(dict(sample_message(), **{field: value}), schema_type="a3cp_message")
    assert info.value.field == field
    assert not (root / "logs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_store_refuses_overlong_identifier(tmp_path: Path) -> None:
    """A 129-character user_id is refused with an error naming user_id."""
    with Store(None, data_root=tmp_path / "data") as s:
        with pytest.raises(ValidationError) as info:
            s.record(dict(sample_message(), user_id="u" * 129), schema_type="a3cp_message")
    assert info.value.field == "user_id"


def test_store_refuses_unsafe_identifier_passed_as_metadata(tmp_path: Path) -> None:
    """An unsafe session_id given as metadata (not in the record) is refused too."""
    rec = sample_message()
    del rec["session_id"]
    with Store(None, data_root=tmp_path / "data") as s:
        with pytest.raises(UnsafeIdentifier) as info:
            s.record(rec, schema_type="a3cp_message", session_id="../x")
    assert info.value.field == "session_id"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_symlinked_directory_inside_root_fails_the_write(tmp_path: Path) -> None:
    """A symlink planted inside the data root (logs -> elsewhere) makes the write fail; nothing is written outside."""
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Store(None, data_root=root) as s:
        (root / "logs").symlink_to(elsewhere)
        with pytest.raises(DurabilityError):
            s.record(sample_message(), schema_type="a3cp_message")
    assert _tree(elsewhere) == []


def test_symlinked_directory_deeper_inside_root_fails_the_write(tmp_path: Path) -> None:
    """A symlink planted at a deeper level (a user's directory) is refused the same way."""
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Store(None, data_root=root) as s:
        (root / "logs" / "users").mkdir(parents=True)
        (root / "logs" / "users" / "elias01").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(DurabilityError) as info:
            s.record(sample_message(), schema_type="a3cp_message")
    assert "symlink" in str(info.value)
    assert _tree(elsewhere) == []


def test_symlinked_journal_file_fails_the_write(tmp_path: Path) -> None:
    """A journal file replaced by a symlink to a file outside the root is never written through."""
    root, target = tmp_path / "data", tmp_path / "outside.jsonl"
    target.write_bytes(b"")
    with Store(None, data_root=root) as s:
        d = root / "logs" / "users" / "elias01" / "sessions" / "sess_demo"
        d.mkdir(parents=True)
        (d / "a3cp_message.jsonl").symlink_to(target)
        with pytest.raises(DurabilityError):
            s.record(sample_message(), schema_type="a3cp_message")
    assert target.read_bytes() == b""


def test_symlinked_internal_dir_is_refused(tmp_path: Path) -> None:
    """A data root whose _recorder folder is a symlink is refused at start."""
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "_recorder").symlink_to(elsewhere)
    with pytest.raises(DurabilityError):
        Store(None, data_root=root)
    assert _tree(elsewhere) == []


def test_data_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    """The data root may be reached through a symlink: it is resolved once, at start."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with Store(None, data_root=tmp_path / "link") as s:
        s.record(sample_message(), schema_type="a3cp_message")
    assert (real / "logs" / "users" / "elias01" / "sessions" / "sess_demo" / "a3cp_message.jsonl").is_file()


# -- the collision check -------------------------------------------------------

def test_known_collision_and_separation() -> None:
    """{user_id}/x.jsonl and a/{user_id}.jsonl collide; distinct literals do not."""
    a = Template.parse("{user_id}/x.jsonl").pattern("t1")
    b = Template.parse("a/{user_id}.jsonl").pattern("t2")
    assert can_collide(a, b)
    c = Template.parse("logs/{schema_type}/{user_id}.jsonl")
    assert not can_collide(c.pattern("t1"), c.pattern("t2"))


def test_placeholder_never_spans_a_slash() -> None:
    """A placeholder stands for one path part, so it cannot absorb a '/'."""
    a = Template.parse("logs/{user_id}.jsonl").pattern("t")
    b = Template.parse("logs/x/y.jsonl").pattern("t")
    assert not can_collide(a, b)


def test_placeholder_is_never_empty() -> None:
    """A placeholder renders at least one character."""
    a = Template.parse("logs/x{user_id}.jsonl").pattern("t")
    b = Template.parse("logs/x.jsonl").pattern("t")
    assert not can_collide(a, b)


# Tokens over a tiny alphabet: literal characters and '*' (a placeholder), at
# most two placeholders so that brute force stays cheap. Placeholder values of
# up to 4 characters are enough to find any collision between two patterns of
# at most 4 tokens each.
_TOKENS = st.lists(st.sampled_from(["a", "b", ".", "/", "*"]), min_size=1, max_size=4).filter(
    lambda t: t.count("*") <= 2
)
_FILL = ["".join(p) for n in range(1, 5) for p in itertools.product("ab.", repeat=n)]


def _renderings(pattern: list[str]) -> set[str]:
    """Every path ``pattern`` renders to with placeholder values of 1-4 chars from {a, b, .}."""
    stars = pattern.count("*")
    out: set[str] = set()
    for values in itertools.product(_FILL, repeat=stars):
        it = iter(values)
        out.add("".join(next(it) if t == "*" else t for t in pattern))
    return out


@settings(max_examples=150, deadline=None)
@given(_TOKENS, _TOKENS)
def test_can_collide_agrees_with_brute_force(a: list[str], b: list[str]) -> None:
    """can_collide is true exactly when some rendering of both patterns is the same path."""
    shared = _renderings(a) & _renderings(b)
    assert can_collide(a, b) == bool(shared)


@settings(max_examples=100, deadline=None)
@given(_TOKENS, _TOKENS)
def test_can_collide_is_symmetric(a: list[str], b: list[str]) -> None:
    """can_collide(a, b) == can_collide(b, a)."""
    assert can_collide(a, b) == can_collide(b, a)


@settings(max_examples=100, deadline=None)
@given(_TOKENS)
def test_pattern_collides_with_itself_and_its_renderings(a: list[str]) -> None:
    """A pattern collides with itself and with every concrete path it renders to."""
    assert can_collide(a, a)
    for path in list(_renderings(a))[:20]:
        assert can_collide(a, list(path))
