"""Config loading and the registry built from it: every mistake names the file and the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

import recorder
from recorder import ConfigError, Registry, Store, load_config
from recorder.schema.config import default_config_text

REPO = Path(__file__).resolve().parents[2]

MODEL = 'model = "recorder.a3cp:A3CPBase"\n'
ONE_TYPE = "[types.a]\n" + MODEL


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    """Write a config file under ``tmp_path`` and return its path."""
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def config_error(path: Path) -> ConfigError:
    """Load ``path`` and build its registry, returning the ConfigError this raises."""
    with pytest.raises(ConfigError) as info:
        Registry.from_config(load_config(path))
    return info.value


def assert_names(err: ConfigError, path: Path, key: str) -> None:
    """The error names the file and exactly the dotted key, in its fields and its message."""
    assert err.path == str(path)
    assert err.key == key
    assert str(path) in str(err) and key in str(err)


def test_packaged_default_and_configs_file_are_byte_identical() -> None:
    """The packaged default.toml and configs/recorder.toml are the same bytes."""
    packaged = Path(recorder.__file__).parent / "default.toml"
    assert packaged.read_bytes() == (REPO / "configs" / "recorder.toml").read_bytes()
    assert default_config_text().encode("utf-8") == packaged.read_bytes()


@pytest.mark.parametrize("source", [None, REPO / "configs" / "recorder.toml"])
def test_shipped_config_loads_into_a_registry(source: Path | None) -> None:
    """The shipped config loads and every type's model imports."""
    cfg = load_config(source)
    reg = Registry.from_config(cfg)
    assert {"a3cp_message", "raw_action", "audit_event", "feedback_log", "base"} <= set(reg.specs)
    assert cfg.digest.startswith("sha256:")


def test_shipped_config_maps_minor_version_to_its_own_model() -> None:
    """a3cp_message 1.1.x is validated by the 1.1 model and 1.0.x by the base model."""
    spec = Registry.from_config(load_config(None)).get("a3cp_message")
    assert spec.model_for("1.1.3").__name__ == "A3CPMessageV1_1"
    assert spec.model_for("1.0.1").__name__ == "A3CPMessage"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist gives a ConfigError naming the file."""
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.path == str(p)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    """Broken TOML gives a ConfigError naming the file."""
    p = write(tmp_path, "[types.a\n")
    assert_names(config_error(p), p, "(syntax)")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (ONE_TYPE + "colour = 1\n", "types.a.colour"),
        ("[recorder]\nbogus = 1\n" + ONE_TYPE, "recorder.bogus"),
        ("[bogus]\nx = 1\n" + ONE_TYPE, "bogus"),
    ],
    ids=["type-key", "recorder-key", "table"],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    """An unknown key or table is refused, naming its dotted key."""
    p = write(tmp_path, text)
    err = config_error(p)
    assert_names(err, p, key)
    assert "unknown" in err.reason


def test_unknown_key_in_defaults_is_named_in_defaults(tmp_path: Path) -> None:
    """An unknown key in [defaults] is reported as defaults.KEY, not as a key of some type."""
    p = write(tmp_path, "[defaults]\ncolour = 1\n" + ONE_TYPE)
    assert_names(config_error(p), p, "defaults.colour")


def test_wrong_type_in_defaults_is_named_in_defaults(tmp_path: Path) -> None:
    """A wrongly typed value in [defaults] is reported as defaults.KEY."""
    p = write(tmp_path, '[defaults]\nmax_record_bytes = "big"\n' + ONE_TYPE)
    assert_names(config_error(p), p, "defaults.max_record_bytes")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (ONE_TYPE + 'max_record_bytes = "big"\n', "types.a.max_record_bytes"),
        (ONE_TYPE + "max_record_bytes = 0\n", "types.a.max_record_bytes"),
        (ONE_TYPE + 'durability = "sometimes"\n', "types.a.durability"),
        (ONE_TYPE + 'hash = "md5"\n', "types.a.hash"),
        (ONE_TYPE + "denied_fields = 3\n", "types.a.denied_fields"),
        ('[recorder]\nmax_depth = "deep"\n' + ONE_TYPE, "recorder.max_depth"),
        ("[recorder]\nquarantine_max_bytes = -1\n" + ONE_TYPE, "recorder.quarantine_max_bytes"),
        ("[types]\na = 3\n", "types.a"),
        ("[recorder]\n", "types"),
    ],
    ids=["str-for-int", "zero", "enum", "hash-enum", "list", "recorder-int", "negative", "not-table", "no-types"],
)
def test_wrong_value_is_named(tmp_path: Path, text: str, key: str) -> None:
    """A value of the wrong type or range is refused, naming its dotted key."""
    p = write(tmp_path, text)
    assert_names(config_error(p), p, key)


@pytest.mark.parametrize(
    "template",
    [
        "../x.jsonl",
        "/abs/x.jsonl",
        "logs//x.jsonl",
        "logs/./x.jsonl",
        "logs\\\\x.jsonl",
        "{nope}.jsonl",
        "{user_id!r}.jsonl",
        "{user_id:>10}.jsonl",
        "logs/{user_id}.txt",
        "logs/a b.jsonl",
        "_recorder/x.jsonl",
        "",
    ],
)
def test_bad_template_names_the_path_key(tmp_path: Path, template: str) -> None:
    """A destination template that is unsafe or malformed is refused at types.NAME.path."""
    p = write(tmp_path, ONE_TYPE + f'path = "{template}"\n')
    assert_names(config_error(p), p, "types.a.path")


@pytest.mark.parametrize(
    ("path_a", "path_b"),
    [
        ("{user_id}/x.jsonl", "a/{user_id}.jsonl"),
        ("logs/{user_id}.jsonl", "logs/{session_id}.jsonl"),
        ("logs/{user_id}_{session_id}.jsonl", "logs/{session_id}.jsonl"),
        ("logs/{date}.jsonl", "logs/{user_id}.jsonl"),
        ("logs/same.jsonl", "logs/same.jsonl"),
    ],
)
def test_colliding_templates_are_refused(tmp_path: Path, path_a: str, path_b: str) -> None:
    """Two types whose templates can render to the same file are refused, naming one of them."""
    text = f'[types.a]\n{MODEL}path = "{path_a}"\n[types.b]\n{MODEL}path = "{path_b}"\n'
    p = write(tmp_path, text)
    err = config_error(p)
    assert_names(err, p, "types.b.path")
    assert "types.a.path" in err.reason


def test_schema_type_placeholder_keeps_templates_apart(tmp_path: Path) -> None:
    """Two types sharing a template with {schema_type} in it do not collide."""
    path = "logs/{user_id}/{schema_type}.jsonl"
    text = f'[types.a]\n{MODEL}path = "{path}"\n[types.b]\n{MODEL}path = "{path}"\n'
    reg = Registry.from_config(load_config(write(tmp_path, text, "ok.toml")))
    assert set(reg.specs) == {"a", "b"}


@pytest.mark.parametrize(
    "ref",
    ["no.such.module:Model", "recorder.a3cp:NoSuchModel", "recorder.a3cp", "recorder.schema.config:load_config"],
)
def test_unimportable_model_is_named(tmp_path: Path, ref: str) -> None:
    """A model reference that cannot be imported (or is not a pydantic model) names types.NAME.model."""
    p = write(tmp_path, f'[types.a]\nmodel = "{ref}"\n')
    err = config_error(p)
    assert_names(err, p, "types.a.model")
    assert ref in err.reason


def test_unimportable_versioned_model_is_named(tmp_path: Path) -> None:
    """A per-version model that cannot be imported names types.NAME.models.VERSION."""
    p = write(tmp_path, ONE_TYPE + '[types.a.models]\n"1.1" = "recorder.a3cp:Missing"\n')
    assert_names(config_error(p), p, "types.a.models.1.1")


def test_parquet_path_must_end_in_parquet(tmp_path: Path) -> None:
    """format = "parquet" with a .jsonl path is refused at types.NAME.path."""
    p = write(tmp_path, ONE_TYPE + 'format = "parquet"\n')
    err = config_error(p)
    assert_names(err, p, "types.a.path")
    assert ".parquet" in err.reason


@pytest.mark.parametrize("extra", ["rotate_records = 10\n", "session_idle_s = 5\n", "rotate_bytes = 1000\n"])
def test_rotation_needs_a_segment_placeholder(tmp_path: Path, extra: str) -> None:
    """Rotation without {segment} in the path is refused, naming types.NAME.path."""
    p = write(tmp_path, ONE_TYPE + extra)
    err = config_error(p)
    assert_names(err, p, "types.a.path")
    assert "{segment}" in err.reason


def test_negative_rotation_is_refused(tmp_path: Path) -> None:
    """A negative rotation setting is refused at its key."""
    p = write(tmp_path, ONE_TYPE + "rotate_records = -1\n")
    assert_names(config_error(p), p, "types.a.rotate_records")


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('versions = ["1.x"]\n', "types.a.versions"),
        ('versions = ["1.0.0.0"]\n', "types.a.versions"),
        ('versions = ["v1"]\n', "types.a.versions"),
        ('versions = [""]\n', "types.a.versions"),
        ("versions = []\n", "types.a.versions"),
        ("versions = [1]\n", "types.a.versions[0]"),
        ('[types.a.models]\n"one" = "recorder.a3cp:A3CPBase"\n', "types.a.models.one"),
    ],
)
def test_bad_version_string_is_named(tmp_path: Path, extra: str, key: str) -> None:
    """A version that is not MAJOR[.MINOR[.PATCH]] is refused, naming its key."""
    p = write(tmp_path, ONE_TYPE + extra)
    assert_names(config_error(p), p, key)


@pytest.mark.parametrize("name", ['".."', '"a/b"', '"_hidden"', '".dot"'])
def test_unsafe_schema_type_name_is_refused(tmp_path: Path, name: str) -> None:
    """A schema type whose name is not a safe path part is refused at types.NAME."""
    p = write(tmp_path, f"[types.{name}]\n{MODEL}")
    err = config_error(p)
    assert err.path == str(p) and err.key.startswith("types.")


@pytest.mark.parametrize("name", ['"../../etc"', '"a\\u0000b"', '"a\\nb"', '""', '"a b"'])
def test_load_config_alone_refuses_an_unsafe_schema_type_name(tmp_path: Path, name: str) -> None:
    """load_config() refuses a type name that could not be a path part, as Store and recorder run do."""
    p = write(tmp_path, f"[types.{name}]\n{MODEL}")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.path == str(p) and info.value.key.startswith("types.")


@pytest.mark.parametrize("name", ["../../etc", "a\x00b", "a\nb", ""])
def test_registry_built_directly_refuses_an_unsafe_schema_type_name(name: str) -> None:
    """Registry() given specs under an unsafe name refuses them, naming the type's key."""
    spec = Registry.from_config(load_config()).specs["a3cp_message"]
    with pytest.raises(ConfigError) as info:
        Registry({name: spec})
    assert info.value.key == f"types.{name}"


def test_store_refuses_a_bad_config(tmp_path: Path) -> None:
    """Store construction surfaces a config mistake as ConfigError before touching the data root."""
    p = write(tmp_path, ONE_TYPE + 'format = "parquet"\n')
    with pytest.raises(ConfigError) as info:
        Store(p, data_root=tmp_path / "data")
    assert info.value.key == "types.a.path"
    assert not (tmp_path / "data").exists()
