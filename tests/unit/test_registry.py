"""A registry imports each model from sys.path or the config file's directory, and checks default_version."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from recorder import ConfigError, Registry, Store, load_config, read

MODEL = """
from pydantic import BaseModel


class Note(BaseModel):
    text: str
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding a model module of a unique name; cwd is elsewhere, sys.path restored afterwards."""
    name = f"notes_{uuid.uuid4().hex[:8]}"
    here = tmp_path / "project"
    here.mkdir()
    (here / f"{name}.py").write_text(MODEL, encoding="utf-8")
    (here / "my.toml").write_text(f'[types.note]\nmodel = "{name}:Note"\ndefault_version = "1.0.0"\n',
                                  encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return here


def test_model_resolves_from_the_config_files_directory(project: Path) -> None:
    """A model module beside the config imports though neither cwd nor PYTHONPATH holds it."""
    registry = Registry.from_config(load_config("../project/my.toml"))
    (_prefix, model), = registry.get("note").models
    assert model.__name__ == "Note" and sys.path[-1] == str(project)


def test_store_fills_record_id_and_default_version(project: Path) -> None:
    """A record of a model without record_id or schema_version is stored with a new UUID and default_version."""
    with Store("../project/my.toml", data_root="rec") as s:
        s.record({"text": "hi"}, schema_type="note", user_id="u1")
        s.record({"text": "again"}, schema_type="note", user_id="u1", schema_version="1.2.0", record_id="mine")
    first, second = read("rec")
    assert str(uuid.UUID(first["record_id"])) == first["record_id"] and first["schema_version"] == "1.0.0"
    assert (second["record_id"], second["schema_version"]) == ("mine", "1.2.0")
    assert first["record"] == {"text": "hi"}


@pytest.mark.parametrize(("value", "why"), [("2.0.0", "not accepted"), ("1.0", "MAJOR.MINOR.PATCH"),
                                            ("1.x.0", "MAJOR")])
def test_default_version_must_be_an_accepted_whole_version(project: Path, value: str, why: str) -> None:
    """A default_version that is not a whole version that `versions` accepts is a config error on that key."""
    cfg = project / "my.toml"
    cfg.write_text(cfg.read_text().replace('"1.0.0"', f'"{value}"'), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Registry.from_config(load_config(cfg))
    assert info.value.key == "types.note.default_version" and why in info.value.reason


def test_a_model_found_nowhere_names_where_it_looked(project: Path) -> None:
    """A model module in neither sys.path nor the config's directory is refused naming both."""
    cfg = project / "my.toml"
    cfg.write_text('[types.note]\nmodel = "nowhere_to_be_found:Note"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Registry.from_config(load_config(cfg))
    assert info.value.key == "types.note.model" and str(project) in info.value.reason
