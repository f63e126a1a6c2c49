"""Process settings and per-type policies, parsed from TOML into typed structs.

A config has a ``[recorder]`` table (process settings), an optional
``[defaults]`` table (policies every type inherits) and one ``[types.NAME]``
table per schema type. msgspec converts each table into a struct, so a wrong
key or value is reported with the file and the dotted key that holds it.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

from ._paths import check_identifier
from ..exceptions import ConfigError, UnsafeIdentifier

__all__ = ["RecorderSettings", "TypeConfig", "PublishSettings", "Config", "load_config", "default_config_text", "metrics_address"]

Format = Literal["jsonl", "parquet"]
Durability = Literal["fsync", "os"]
HashName = Literal["sha256", "none"]
OnLimit = Literal["reject", "delete_oldest"]
LogFormat = Literal["plain", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


class TypeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Policies of one schema type (see docs/FORMAT.md for each key)."""

    model: str
    models: dict[str, str] = {}
    versions: list[str] = msgspec.field(default_factory=lambda: ["1"])
    default_version: str = ""
    format: Format = "jsonl"
    path: str = "logs/{schema_type}/{date}.jsonl"
    durability: Durability = "fsync"
    max_record_bytes: int = 65536
    denied_fields: list[str] = []
    denied_prefixes: list[str] = []
    hash: HashName = "sha256"
    # segments (a template with {segment} is required for any of these)
    rotate_bytes: int = 0
    rotate_records: int = 0
    rotate_age_s: float = 0.0
    session_idle_s: float = 0.0
    keep_journal: bool = False
    # storage limits and retention
    max_bytes: int = 0
    retention_s: float = 0.0
    on_limit: OnLimit = "reject"


class RecorderSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings of the recorder process itself."""

    data_root: str = "recording"
    run_dir: str = ""
    endpoint: str = ""
    control_endpoint: str = ""
    max_message_bytes: int = 1 << 20
    max_open_files: int = 128
    quarantine_max_bytes: int = 64 << 20
    quarantine_copy_bytes: int = 2048
    max_depth: int = 32
    max_total_bytes: int = 0
    min_free_bytes: int = 64 << 20
    session_end_event: str = "session_end"
    # CURVE for TCP endpoints: the server's secret certificate and the
    # directory of the client public certificates allowed in (both or none)
    curve_server_secret: str = ""
    curve_clients_dir: str = ""
    # supervisor: give up after restart_limit crashes within restart_window_s
    restart_limit: int = 10
    restart_window_s: float = 60.0
    # log lines of `recorder run` and the recorder process (stderr)
    log_format: LogFormat = "plain"
    log_level: LogLevel = "info"
    # Prometheus endpoint of the supervisor: "" (off), "PORT" (on 127.0.0.1) or "HOST:PORT"
    metrics_address: str = ""
    metrics_timeout_s: float = 1.0


class PublishSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``[publish]`` table: copy sealed segments into Delta Lake tables (docs/FLEET.md)."""

    # s3://bucket/prefix, or a local directory (relative: to the config file's directory)
    table_root: str
    endpoint: str = ""  # e.g. http://127.0.0.1:8333 for a local S3 server; "" for AWS
    region: str = "us-east-1"
    allow_http: bool = False
    # an owner-only file of AWS_ACCESS_KEY_ID=... / AWS_SECRET_ACCESS_KEY=... lines; "" reads the environment
    credentials_file: str = ""
    recorder_id: str = ""  # "" makes one once and keeps it in _recorder/recorder_id
    types: list[str] = []  # [] publishes every parquet-format type
    interval_s: float = 2.0  # how often the publisher looks for newly sealed segments
    backoff_max_s: float = 60.0  # longest wait between retries while the store fails


class Config(msgspec.Struct, kw_only=True):
    """A whole parsed config: where it came from, settings and types.

    ``directory`` is the absolute directory of the config file (None for the
    packaged default): model import paths are looked up there too.
    """

    source: str
    digest: str
    recorder: RecorderSettings
    types: dict[str, TypeConfig]
    directory: str | None = None
    publish: PublishSettings | None = None


_AT = re.compile(r" - at `\$(?:\[\.\.\.\])?\.?(?P<key>[^`]*)`$")


def _convert(table: Any, cls: type[Any], source: str, prefix: str) -> Any:
    try:
        return msgspec.convert(table, cls)
    except msgspec.ValidationError as e:
        text = str(e)
        m = _AT.search(text)
        key = prefix
        if m:
            text = text[: m.start()]
            if m.group("key"):
                key = f"{prefix}.{m.group('key')}"
        unknown = re.match(r"Object contains unknown field `(.+)`", text)
        if unknown:
            key, text = f"{key}.{unknown.group(1)}", "unknown key"
        raise ConfigError(source, key, text) from e


_POSITIVE = ("max_record_bytes",)
_NON_NEGATIVE = ("rotate_bytes", "rotate_records", "rotate_age_s", "session_idle_s", "max_bytes", "retention_s")
_RECORDER_POSITIVE = (
    "max_message_bytes",
    "max_open_files",
    "quarantine_max_bytes",
    "quarantine_copy_bytes",
    "max_depth",
)


def _blame_defaults(err: ConfigError, prefix: str, table: dict[str, Any], defaults: dict[str, Any]) -> ConfigError:
    """Name ``defaults.KEY`` when the faulty key of a type came from ``[defaults]``."""
    rest = err.key[len(prefix) + 1 :] if err.key.startswith(prefix + ".") else ""
    top = re.split(r"[.\[]", rest, maxsplit=1)[0]
    if top and top in defaults and top not in table:
        return ConfigError(err.path, f"defaults.{rest}", err.reason)
    return err


def metrics_address(text: str) -> tuple[str, int]:
    """``"9464"`` -> ("127.0.0.1", 9464); ``"0.0.0.0:9464"`` -> ("0.0.0.0", 9464); port 0: any free port.

    Raises:
        ValueError: not ``PORT`` or ``HOST:PORT`` with a port in 0..65535.
    """
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not PORT or HOST:PORT (port 0-65535)")
    return host, int(port)


def parse_config(text: str, source: str, directory: str | None = None) -> Config:
    """Parse config text; ``source`` names it in errors, ``directory`` is where it lives.

    Raises:
        ConfigError: naming the file and the dotted key at fault.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, "(syntax)", str(e)) from e
    unknown = set(doc) - {"recorder", "defaults", "types", "publish"}
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown table")
    settings = _convert(doc.get("recorder", {}), RecorderSettings, source, "recorder")
    for key in ("max_total_bytes", "min_free_bytes"):
        if getattr(settings, key) < 0:
            raise ConfigError(source, f"recorder.{key}", "must be 0 (off) or positive")
    if settings.restart_limit < 1:
        raise ConfigError(source, "recorder.restart_limit", "must be at least 1")
    if settings.restart_window_s <= 0:
        raise ConfigError(source, "recorder.restart_window_s", "must be positive")
    if settings.metrics_timeout_s <= 0:
        raise ConfigError(source, "recorder.metrics_timeout_s", "must be positive")
    if settings.metrics_address:
        try:
            metrics_address(settings.metrics_address)
        except ValueError as e:
            raise ConfigError(source, "recorder.metrics_address", str(e)) from e
    if bool(settings.curve_server_secret) != bool(settings.curve_clients_dir):
        raise ConfigError(source, "recorder.curve_clients_dir",
                          "CURVE needs both curve_server_secret and curve_clients_dir (authentication is enforced)")
    for key in _RECORDER_POSITIVE:
        if getattr(settings, key) <= 0:
            raise ConfigError(source, f"recorder.{key}", "must be a positive integer")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(source, "defaults", "must be a table")
    raw_types = doc.get("types", {})
    if not isinstance(raw_types, dict) or not raw_types:
        raise ConfigError(source, "types", "at least one [types.NAME] table is required")
    types: dict[str, TypeConfig] = {}
    for name, table in raw_types.items():
        try:
            check_identifier(name, "schema_type", name)
        except UnsafeIdentifier as e:
            raise ConfigError(source, f"types.{name}", f"schema type name {e.reason}") from e
        if not isinstance(table, dict):
            raise ConfigError(source, f"types.{name}", "must be a table")
        merged = {**defaults, **table}
        prefix = f"types.{name}"
        try:
            tc = _convert(merged, TypeConfig, source, prefix)
            for key in _POSITIVE:
                if getattr(tc, key) <= 0:
                    raise ConfigError(source, f"{prefix}.{key}", "must be a positive integer")
            for key in _NON_NEGATIVE:
                if getattr(tc, key) < 0:
                    raise ConfigError(source, f"{prefix}.{key}", "must be 0 (off) or positive")
        except ConfigError as e:
            blamed = _blame_defaults(e, prefix, table, defaults)
            if blamed is e:
                raise
            raise blamed from e
        types[name] = tc
    publish = _publish_settings(doc, types, source, directory) if "publish" in doc else None
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return Config(source=source, digest=digest, recorder=settings, types=types, directory=directory,
                  publish=publish)


def _publish_settings(doc: dict[str, Any], types: dict[str, TypeConfig], source: str,
                      directory: str | None) -> PublishSettings:
    """The ``[publish]`` table, checked; a relative local ``table_root`` made absolute."""
    if not isinstance(doc["publish"], dict):
        raise ConfigError(source, "publish", "must be a table")
    p: PublishSettings = _convert(doc["publish"], PublishSettings, source, "publish")
    if not p.table_root:
        raise ConfigError(source, "publish.table_root", "must name s3://bucket/prefix or a directory")
    if "://" in p.table_root and not p.table_root.startswith("s3://"):
        raise ConfigError(source, "publish.table_root", "only s3:// URLs and local directories are supported")
    if "://" not in p.table_root and not Path(p.table_root).is_absolute():
        p.table_root = str(Path(directory or ".").resolve() / p.table_root)
    if p.recorder_id:
        try:
            check_identifier(p.recorder_id, "recorder_id", p.recorder_id)
        except UnsafeIdentifier as e:
            raise ConfigError(source, "publish.recorder_id", e.reason) from e
    for name in p.types:
        if name not in types:
            raise ConfigError(source, "publish.types", f"{name!r} is not a [types.NAME] of this config")
    for key in ("interval_s", "backoff_max_s"):
        if getattr(p, key) <= 0:
            raise ConfigError(source, f"publish.{key}", "must be positive")
    return p


def default_config_text() -> str:
    """The config shipped inside the package (the same as configs/recorder.toml)."""
    return resources.files("recorder").joinpath("default.toml").read_text(encoding="utf-8")


def load_config(path: str | Path | None = None) -> Config:
    """Load a config file, or the packaged default when ``path`` is None.

    Raises:
        ConfigError: the file is missing or a key is wrong.
    """
    if path is None:
        return parse_config(default_config_text(), "<default recorder.toml>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), "(file)", e.strerror or str(e)) from e
    return parse_config(text, str(p), str(p.resolve().parent))
