"""The Delta Lake side of publication: storage options, transaction versions, one exactly-once commit.

Every deltalake and object-store error is wrapped here into PublishError.
Commits are made with ``max_commit_retries=0``: a concurrent writer's
commit makes ours fail at once (the store refuses the second
``If-None-Match: *`` PUT of a log entry), and this module reloads the table,
checks the transaction version again and retries, counting the conflict.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ..schema.config import PublishSettings
from ..exceptions import ConfigError, PublishError

try:
    import deltalake
    from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, Transaction
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
except ImportError as _e:  # pragma: no cover - the fleet extra is missing
    raise PublishError("deltalake", f"publication needs the fleet extra "
                                    f"(pip install -c constraints.txt -e '.[fleet]'): {_e}") from _e

__all__ = ["Lake", "storage_options"]

_CRED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
MAX_CONFLICTS = 50


def _credentials_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of an owner-only file (other keys and comments ignored)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(path, "publish.credentials_file", e.strerror or str(e)) from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(path, "publish.credentials_file", "must be readable by its owner only (chmod 600)")
    found: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() in _CRED_KEYS:
                found[key.strip()] = value.strip().strip("\"'")
    return found


def storage_options(p: PublishSettings) -> dict[str, str]:
    """deltalake storage options for ``p`` (credentials included: keep this dict out of logs and files)."""
    if not p.table_root.startswith("s3://"):
        return {}
    # timeouts: a hung S3 call fails the round (and is retried) instead of stalling the publisher
    opts = {"AWS_REGION": p.region, "aws_conditional_put": "etag", "timeout": "120s", "connect_timeout": "10s"}
    if p.endpoint:
        opts["AWS_ENDPOINT_URL"] = p.endpoint
    if p.allow_http:
        opts["AWS_ALLOW_HTTP"] = "true"
    creds = _credentials_file(p.credentials_file) if p.credentials_file else {
        k: os.environ[k] for k in _CRED_KEYS if os.environ.get(k)}
    opts.update(creds)
    return opts


def _why(e: BaseException) -> str:
    """An error's kind and first line, with nothing of the options (deltalake never echoes credentials)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:300]}"


class Lake:
    """The tables under one ``table_root``."""

    def __init__(self, table_root: str, options: dict[str, str]) -> None:
        self.table_root = table_root.rstrip("/")
        self._options = options
        self.conflicts = 0  # commit conflicts retried, since this object was made

    def __repr__(self) -> str:
        return f"Lake({self.table_root!r})"

    def uri(self, table: str) -> str:
        """Where one table lives."""
        return f"{self.table_root}/{table}"

    def open(self, table: str) -> DeltaTable | None:
        """The table at its latest version, or None if it does not exist yet.

        Raises:
            PublishError: the store cannot be reached or refuses us.
        """
        try:
            return DeltaTable(self.uri(table), storage_options=self._options)
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as e:
            raise PublishError(self.uri(table), _why(e)) from e

    @staticmethod
    def txn_version(dt: DeltaTable | None, app_id: str) -> int:
        """The application transaction version ``app_id`` committed last (0 for none)."""
        if dt is None:
            return 0
        v = dt.transaction_version(app_id)
        return int(v) if v is not None else 0

    def commits_of(self, dt: DeltaTable, app_id: str, limit: int = 1000) -> dict[int, dict[str, Any]]:
        """Segment number -> commit metadata of ``app_id``'s commits among the table's last ``limit``."""
        try:
            history = dt.history(limit)
        except (DeltaError, OSError) as e:
            raise PublishError(dt.table_uri, _why(e)) from e
        found: dict[int, dict[str, Any]] = {}
        for c in history:
            if c.get("recorder.app_id") == app_id and isinstance(c.get("recorder.segment"), int):
                found[int(c["recorder.segment"])] = c
        return found

    def commit(self, table: str, data: pa.Table, app_id: str, number: int, metadata: dict[str, Any],
               *, check_version: bool = True, on_conflict: Callable[[], None] | None = None) -> bool:
        """Append ``data`` to ``table`` as ``app_id``'s transaction ``number``, exactly once.

        Loads the latest table version first and does nothing if the
        transaction version of ``app_id`` is already ``number`` or more
        (delta-rs itself would accept a repeated or lower version).

        Returns:
            True if this call committed, False if the table already held it.

        Raises:
            PublishError: the store failed, or more than MAX_CONFLICTS conflicts in a row.
        """
        conflicts = 0
        while True:
            dt = self.open(table)
            if check_version and self.txn_version(dt, app_id) >= number:
                return False
            props = CommitProperties(custom_metadata={**metadata, "recorder.app_id": app_id,
                                                      "recorder.segment": number},
                                     max_commit_retries=0,
                                     app_transactions=[Transaction(app_id, number, int(time.time() * 1000))])
            try:
                deltalake.write_deltalake(dt if dt is not None else self.uri(table), data, mode="append",
                                          schema_mode="merge", storage_options=self._options,
                                          commit_properties=props,
                                          post_commithook_properties=PostCommitHookProperties(
                                              create_checkpoint=True, cleanup_expired_logs=False))
                return True
            except (CommitFailedError, DeltaError) as e:
                # A concurrent commit took the log entry first (or created the table first): reload and retry.
                created = dt is None and self.open(table) is not None
                if not (isinstance(e, CommitFailedError) or created) or conflicts >= MAX_CONFLICTS:
                    raise PublishError(self.uri(table), _why(e)) from e
                conflicts += 1
                self.conflicts += 1
                if on_conflict is not None:
                    on_conflict()
                time.sleep(random.uniform(0.0, min(1.0, 0.05 * conflicts)))  # jitter: writers spread out
            except (OSError, ValueError) as e:
                raise PublishError(self.uri(table), _why(e)) from e

    def rows(self, table: str, recorder_id: str) -> pa.Table | None:
        """``segment`` and ``seq`` of every row of ``recorder_id`` in ``table`` (None: no table)."""
        import pyarrow.dataset as ds

        dt = self.open(table)
        if dt is None:
            return None
        try:
            return dt.to_pyarrow_dataset().to_table(columns=["segment", "seq"],
                                                    filter=ds.field("recorder_id") == recorder_id)
        except (DeltaError, OSError) as e:
            raise PublishError(self.uri(table), _why(e)) from e

    def tables(self) -> list[str]:
        """Names of the tables under a local table root (an S3 root is not listed: callers name tables)."""
        if "://" in self.table_root:
            return []
        try:
            return sorted(d for d in os.listdir(self.table_root)
                          if os.path.isdir(os.path.join(self.table_root, d, "_delta_log")))
        except FileNotFoundError:
            return []
