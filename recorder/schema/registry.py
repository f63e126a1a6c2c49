"""The schema registry: schema type -> models per version, format, path, policies."""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass, field
from types import ModuleType

from pydantic import BaseModel

from ._paths import Template, can_collide, check_identifier
from .config import Config, TypeConfig
from ..exceptions import ConfigError, UnknownSchemaError, ValidationError

__all__ = ["JOURNAL_FORMAT", "Registry", "TypeSpec", "parse_version"]

#: The format every segment is first written in (its journal). A type of
#: another format has each sealed segment converted into a file of its own,
#: named for the format (``recorder.storage.formats``): ``<stem>.<format>``.
JOURNAL_FORMAT = "jsonl"


_VERSION = re.compile(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,2}", re.ASCII)


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.0.1"`` -> ``(1, 0, 1)``; raises ValueError on anything else."""
    if not _VERSION.fullmatch(text):
        raise ValueError(f"{text!r} is not MAJOR[.MINOR[.PATCH]] (ASCII digits, no leading zeros)")
    parts = text.split(".")
    return tuple(int(p) for p in parts)


def _import(module: str, directory: str | None) -> ModuleType:
    """Import ``module`` from ``sys.path``, else from the config file's ``directory``.

    The directory goes to the end of ``sys.path`` (so the model's module can
    import its neighbours, and anything on ``sys.path`` still wins), only
    when the module is found nowhere else.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if directory is None or e.name != module.split(".")[0]:
            raise  # not found anywhere, or the model's module itself failed to import something
        if directory not in sys.path:
            sys.path.append(directory)
            importlib.invalidate_caches()
        return importlib.import_module(module)


def _import_model(ref: str, source: str, key: str, directory: str | None = None) -> type[BaseModel]:
    module, _, attr = ref.partition(":")
    try:
        obj = getattr(_import(module, directory), attr)
    except (ImportError, AttributeError, ValueError) as e:
        where = f" (looked in sys.path and {directory})" if directory else ""
        raise ConfigError(source, key, f"cannot import {ref!r}{where}: {e}") from e
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ConfigError(source, key, f"{ref!r} is not a pydantic model class")
    return obj


def _check_default(version: str, accepted: tuple[tuple[int, ...], ...], source: str, key: str) -> None:
    """A ``default_version`` must be a whole version that ``versions`` accepts."""
    try:
        v = parse_version(version)
    except ValueError as e:
        raise ConfigError(source, key, str(e)) from e
    if len(v) != 3:
        raise ConfigError(source, key, f"{version!r} is not MAJOR.MINOR.PATCH")
    if not any(v[: len(a)] == a for a in accepted):
        raise ConfigError(source, key, f"{version} is not accepted by versions")


def _journal_pattern(tokens: list[str], fmt: str) -> list[str]:
    """A template's pattern with its format's ending read as the journal it starts as (``.parquet`` -> ``.jsonl``)."""
    ext = "." + fmt
    return tokens[: -len(ext)] + list("." + JOURNAL_FORMAT) if "".join(tokens).endswith(ext) else tokens


def _needles(words: list[str], close: bool) -> tuple[bytes, ...]:
    # A key or value is always quoted in JSON; an escape that could spell one
    # otherwise is looked for separately.
    return tuple(b'"' + w.encode() + (b'"' if close else b"") for w in words)


@dataclass(frozen=True)
class TypeSpec:
    """Everything the writer needs to know about one schema type."""

    name: str
    config: TypeConfig
    template: Template
    accepted: tuple[tuple[int, ...], ...]
    models: tuple[tuple[tuple[int, ...], type[BaseModel]], ...]  # longest prefix first
    denied_fields: frozenset[str]
    denied_prefixes: tuple[str, ...]
    #: every denied name as a JSON string (b'"pcm"') and prefix as the
    #: opening of one (b'"data:image/', lower case, searched in the lowered
    #: record): the common case, none present, costs a few substring scans
    needles: tuple[bytes, ...] = ()
    prefix_needles: tuple[bytes, ...] = ()
    _by_version: dict[str, type[BaseModel]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def hashing(self) -> bool:
        return self.config.hash != "none"

    @property
    def fsync(self) -> bool:
        return self.config.durability == "fsync"

    def model_for(self, version: str) -> type[BaseModel]:
        """The model that validates ``version`` of this type.

        Raises:
            UnknownSchemaError: an unknown MAJOR version.
            ValidationError: a malformed or not-accepted version.
        """
        cached = self._by_version.get(version)
        if cached is not None:
            return cached
        try:
            v = parse_version(version)
        except ValueError as e:
            raise ValidationError(self.name, "schema_version", str(e)) from e
        if len(v) != 3:
            raise ValidationError(self.name, "schema_version", f"{version!r} is not MAJOR.MINOR.PATCH")
        accepted = ", ".join(".".join(map(str, a)) for a in self.accepted)
        if not any(a[0] == v[0] for a in self.accepted):
            raise UnknownSchemaError(
                self.name, "schema_version", f"unknown major version {v[0]}; accepted: {accepted}"
            )
        if not any(v[: len(a)] == a for a in self.accepted):
            raise ValidationError(self.name, "schema_version", f"version {version} not accepted; accepted: {accepted}")
        for prefix, model in self.models:
            if v[: len(prefix)] == prefix:
                if len(self._by_version) < 1024:
                    self._by_version[version] = model
                return model
        raise UnknownSchemaError(self.name, "schema_version", f"no model registered for {version}")


class Registry:
    """Maps schema types to their specs; refuses configs whose files could collide."""

    def __init__(self, specs: dict[str, TypeSpec]) -> None:
        """Raises ConfigError if a type's name could not safely become a path part."""
        for name, spec in specs.items():
            try:
                check_identifier(name, "schema_type", name)
            except ValidationError as e:
                raise ConfigError("<registry>", f"types.{name}", f"schema type name {e.reason}") from e
            if spec.name != name:
                raise ConfigError("<registry>", f"types.{name}", f"holds the spec of {spec.name!r}")
        self.specs = specs

    @classmethod
    def from_config(cls, config: Config) -> Registry:
        """Build the registry, importing every model.

        Raises:
            ConfigError: naming the file and key of the first problem.
        """
        src = config.source
        specs: dict[str, TypeSpec] = {}
        for name, tc in config.types.items():
            key = f"types.{name}"  # parse_config has checked that the name is safe
            try:
                template = Template.parse(tc.path)
            except ValueError as e:
                raise ConfigError(src, f"{key}.path", str(e)) from e
            ext = "." + tc.format  # a format's files are named for it
            if not template.text.endswith(ext):
                raise ConfigError(src, f"{key}.path", f"a {tc.format} type's path must end with '{ext}'")
            segmented = "segment" in template.fields
            if segmented and "{segment" in template.text.rsplit("/", 1)[0]:
                raise ConfigError(src, f"{key}.path", "{segment} belongs in the file name, not a directory")
            after = template.text.split("{segment", 1)[1].split("}", 1)[1] if segmented else ""
            if segmented and ("{" in after or any(c.isdigit() for c in after)):
                raise ConfigError(src, f"{key}.path",
                                  "{segment} must be the last placeholder, with no digits after it")
            wants = [k for k in ("rotate_bytes", "rotate_records", "rotate_age_s", "session_idle_s")
                     if getattr(tc, k)] + ([f"format = {tc.format!r}"] if tc.format != JOURNAL_FORMAT else [])
            if wants and not segmented:
                raise ConfigError(src, f"{key}.path", f"{wants[0]} needs a {{segment}} placeholder in the path")
            try:
                accepted = tuple(parse_version(v) for v in tc.versions)
            except ValueError as e:
                raise ConfigError(src, f"{key}.versions", str(e)) from e
            if not accepted:
                raise ConfigError(src, f"{key}.versions", "at least one version is required")
            if tc.default_version:
                _check_default(tc.default_version, accepted, src, f"{key}.default_version")
            here = config.directory
            models: list[tuple[tuple[int, ...], type[BaseModel]]] = [
                ((), _import_model(tc.model, src, f"{key}.model", here))]
            for prefix, ref in tc.models.items():
                try:
                    pv = parse_version(prefix)
                except ValueError as e:
                    raise ConfigError(src, f"{key}.models.{prefix}", str(e)) from e
                models.append((pv, _import_model(ref, src, f"{key}.models.{prefix}", here)))
            models.sort(key=lambda m: -len(m[0]))
            specs[name] = TypeSpec(
                name=name,
                config=tc,
                template=template,
                accepted=accepted,
                models=tuple(models),
                denied_fields=frozenset(tc.denied_fields),
                denied_prefixes=tuple(p.lower() for p in tc.denied_prefixes),
                needles=_needles(tc.denied_fields, close=True),
                prefix_needles=_needles([p.lower() for p in tc.denied_prefixes], close=False),
            )
        names = sorted(specs)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                pa = specs[a].template.pattern(a)
                pb = specs[b].template.pattern(b)
                # a type of another format journals first
                ja, jb = _journal_pattern(pa, specs[a].config.format), _journal_pattern(pb, specs[b].config.format)
                if can_collide(pa, pb) or can_collide(ja, jb):
                    raise ConfigError(
                        src,
                        f"types.{b}.path",
                        f"{specs[b].template.text!r} can name the same file as types.{a}.path "
                        f"{specs[a].template.text!r}; put {{schema_type}} or a distinct literal in it",
                    )
        return cls(specs)

    def denied(self, schema_type: str) -> tuple[frozenset[str], tuple[str, ...]]:
        """Denied names and prefixes for ``schema_type``; for an unknown type, those of every type."""
        spec = self.specs.get(schema_type)
        if spec is not None:
            return spec.denied_fields, spec.denied_prefixes
        names = frozenset().union(*(s.denied_fields for s in self.specs.values()))
        prefixes = tuple(sorted({p for s in self.specs.values() for p in s.denied_prefixes}))
        return names, prefixes

    def get(self, schema_type: str) -> TypeSpec:
        """The spec of ``schema_type``; raises UnknownSchemaError if unregistered."""
        try:
            return self.specs[schema_type]
        except KeyError:
            raise UnknownSchemaError(
                str(schema_type)[:64], "schema_type", f"not registered; known: {', '.join(sorted(self.specs))}"
            ) from None
