"""The thin layer between the one :class:`~earlystop_predict.ledger.store.Ledger` and its
two databases: SQLite (stdlib, the default) and PostgreSQL (psycopg 3, the ``postgres``
extra, imported only when a ``postgresql://`` ledger is opened).

The ledger's SQL is written once, with ``?`` placeholders and a few ``{tokens}`` a
dialect fills in (:meth:`Dialect.sql`): a null-safe comparison, the float type, the JSON
lookup of the incumbent query, SQLite's ``WITHOUT ROWID``. Upserts are
``INSERT ... ON CONFLICT (...) DO UPDATE``, which both speak. What is a dialect's own:

- SQLite: WAL, ``synchronous=NORMAL``, ``busy_timeout``, ``BEGIN IMMEDIATE`` writes retried
  while another writer holds the lock, the schema version in ``PRAGMA user_version``
  (``application_id`` marks the file), read-only opens via a ``mode=ro`` URI.
- PostgreSQL: autocommit sessions with explicit ``BEGIN``; ``lock_timeout`` bounds a wait
  for another writer; serialization failures and deadlocks are retried; a lost
  connection is reopened and the transaction rerun (every write is idempotent); the
  schema version in a table ``esp_ledger``; schema creation under an advisory lock; a
  read-only open sets ``default_transaction_read_only``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from earlystop_predict.ledger.errors import SCHEMA_VERSION, LedgerError
from earlystop_predict.ledger.target import Target

APPLICATION_ID = 0x45535031  # "ESP1": marks an SQLite file as an earlystop_predict ledger
TABLES = ("runs", "epochs", "forecasts")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    study        TEXT,
    task         TEXT,
    metric       TEXT NOT NULL,
    mode         TEXT NOT NULL,
    hparams      TEXT NOT NULL DEFAULT '{{}}',
    meta         TEXT NOT NULL DEFAULT '{{}}',
    extra        TEXT NOT NULL DEFAULT '{{}}',
    target_epoch INTEGER,
    status       TEXT NOT NULL DEFAULT 'running',
    created      {real} NOT NULL,
    updated      {real} NOT NULL,
    final_value  {real},
    final_epoch  INTEGER,
    stopped      TEXT
);
CREATE INDEX IF NOT EXISTS runs_study ON runs (study, metric, status);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL,
    epoch  INTEGER NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
){without_rowid};
CREATE TABLE IF NOT EXISTS forecasts (
    run_id   TEXT NOT NULL,
    at_epoch INTEGER NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (run_id, at_epoch)
){without_rowid};
"""


class Dialect:
    """What differs between the ledger's databases (one instance per :class:`Ledger`).

    Attributes:
        target: where the ledger lives.
        errors: the driver's base error class.
        begin_write / begin_read: the statements that open a write transaction and a
            consistent read snapshot.
    """

    tokens: dict[str, str] = {}
    begin_write = "BEGIN"
    begin_read = "BEGIN"
    errors: type[BaseException] = Exception
    database_errors: type[BaseException] = Exception

    def __init__(self, target: Target, *, timeout: float, readonly: bool) -> None:
        self.target = target
        self.timeout = timeout
        self.readonly = readonly
        self._sql: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    @property
    def shown(self) -> str:
        return self.target.shown

    def sql(self, text: str, **extra: str) -> str:
        """``text`` with this dialect's tokens (and ``extra``) filled and its placeholders."""
        key = (text, tuple(sorted(extra.items())))
        out = self._sql.get(key)
        if out is None:
            out = self._sql[key] = self._placeholders(text.format(**self.tokens, **extra))
        return out

    def _placeholders(self, text: str) -> str:
        return text

    def schema(self) -> list[str]:
        """The statements that create the three tables (and their index)."""
        return [s for s in (p.strip() for p in self.sql(SCHEMA).split(";")) if s]

    # Overridden per dialect ------------------------------------------------------
    def connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def configure(self, conn: Any) -> None:
        """Session settings, right after connecting."""

    def durability(self, conn: Any) -> None:
        """A writer's durability settings (SQLite's WAL); none on a server."""

    def read_version(self, conn: Any) -> int:  # pragma: no cover - abstract
        """The schema version, 0 for an empty database; not-a-ledger raises."""
        raise NotImplementedError

    def write_version(self, conn: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def lock_schema(self, conn: Any) -> None:
        """Serialise schema creation between processes (inside the write transaction)."""

    def check_readable(self, conn: Any, version: int) -> None:
        """A read-only ledger must already hold the tables (none is created)."""
        if version < SCHEMA_VERSION:
            raise LedgerError(f"{self.shown}: no earlystop_predict ledger there yet")

    def is_busy(self, exc: BaseException) -> bool:
        """Whether ``exc`` means: another writer is in the way, run the transaction again."""
        return False

    def is_lost(self, exc: BaseException, conn: Any) -> bool:
        """Whether ``exc`` means: the connection is gone, reconnect and run it again."""
        return False

    def in_transaction(self, conn: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------- SQLite
def _sqlite_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteDialect(Dialect):
    """The embedded default: one file in WAL mode (stdlib :mod:`sqlite3`)."""

    tokens = {
        "is": "IS", "is_not": "IS NOT", "real": "REAL", "without_rowid": " WITHOUT ROWID",
        "binary": "",
        "json_value": "json_extract(e.data, '$.\"' || r.metric || '\"')",
        "number": "CASE WHEN typeof(v) IN ('real', 'integer') THEN v END",
    }
    begin_write = "BEGIN IMMEDIATE"
    errors = sqlite3.Error
    database_errors = sqlite3.DatabaseError

    @property
    def memory(self) -> bool:
        return self.target.location == ":memory:"

    def connect(self) -> sqlite3.Connection:
        target, uri = self.target.location, False
        if self.readonly and not self.memory:
            target, uri = self._readonly_uri(), True
        try:
            return sqlite3.connect(target, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False, cached_statements=64, uri=uri)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.shown}: cannot open ledger: {exc}") from exc

    def _readonly_uri(self) -> str:
        """The SQLite URI of a read-only open that writes nothing next to the ledger.

        With no ``-wal`` file beside it no writer has the ledger open and every commit
        is in the main file: it is read as ``immutable`` (no ``-shm``/``-wal`` created,
        so a read-only folder works). With one, a writer is live (or was killed): it is
        opened ``mode=ro`` through the writer's WAL, seeing every committed epoch.
        """
        path = self.target.location
        uri = Path(os.path.abspath(path)).as_uri() + "?mode=ro"
        if not os.path.exists(path + "-wal"):
            uri += "&immutable=1"
        return uri

    def configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def durability(self, conn: sqlite3.Connection) -> None:
        """WAL (retried: switching needs the lock), ``synchronous=NORMAL``."""
        if not self.memory:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = OFF")

    def read_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if app_id not in (0, APPLICATION_ID):
            raise LedgerError(f"{self.shown}: an SQLite file of another application "
                              f"(application_id {app_id}), not an earlystop_predict ledger")
        if version == 0:
            tables = self._tables(conn)
            if tables and not set(TABLES) <= tables:
                raise LedgerError(f"{self.shown}: an SQLite file with tables "
                                  f"{sorted(tables)}, not an earlystop_predict ledger")
        return version

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def write_version(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def check_readable(self, conn: sqlite3.Connection, version: int) -> None:
        conn.execute("PRAGMA query_only = ON")
        if version < SCHEMA_VERSION and not set(TABLES) <= self._tables(conn):
            raise LedgerError(f"{self.shown}: an empty SQLite file, not a ledger yet")

    def is_busy(self, exc: BaseException) -> bool:
        return _sqlite_busy(exc)

    def in_transaction(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction


# ----------------------------------------------------------------------- PostgreSQL
_RETRY_STATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock timeout
_META = "esp_ledger"
_ADVISORY_KEY = APPLICATION_ID  # pg_advisory_xact_lock key of schema creation


class PostgresDialect(Dialect):
    """A PostgreSQL database shared by many machines (psycopg 3, imported on open)."""

    tokens = {
        "is": "IS NOT DISTINCT FROM", "is_not": "IS DISTINCT FROM",
        "real": "DOUBLE PRECISION", "without_rowid": "", "binary": ' COLLATE "C"',
        "json_value": "CAST(e.data AS jsonb) -> r.metric",
        "number": "CASE WHEN jsonb_typeof(v) = 'number' THEN CAST(v AS double precision) END",
    }
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ"

    def __init__(self, target: Target, *, timeout: float, readonly: bool) -> None:
        super().__init__(target, timeout=timeout, readonly=readonly)
        from earlystop_predict._imports import require

        self.psycopg = require("psycopg", extra="postgres")
        self.errors = self.psycopg.Error
        self.database_errors = self.psycopg.Error

    def _placeholders(self, text: str) -> str:
        return text.replace("?", "%s")  # the ledger's SQL has no other '?' (nor '%')

    def connect(self) -> Any:
        from urllib.parse import parse_qs, urlsplit

        kwargs: dict[str, Any] = {"autocommit": True}
        query = parse_qs(urlsplit(self.target.location).query)
        if "connect_timeout" not in query:
            kwargs["connect_timeout"] = max(2, int(self.timeout))
        if "application_name" not in query:
            kwargs["application_name"] = "earlystop_predict"
        try:
            return self.psycopg.connect(self.target.location, **kwargs)
        except self.psycopg.Error as exc:
            raise LedgerError(f"{self.shown}: cannot open ledger: "
                              f"{str(exc).strip() or type(exc).__name__}") from exc

    def configure(self, conn: Any) -> None:
        conn.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")

    def _tables(self, conn: Any) -> set[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_name IN (%s, %s, %s, %s)", (*TABLES, _META)).fetchall()
        return {r[0] for r in rows}

    def read_version(self, conn: Any) -> int:
        tables = self._tables(conn)
        if _META not in tables:
            if tables:
                raise LedgerError(f"{self.shown}: the database holds tables {sorted(tables)} "
                                  f"but no {_META}: not an earlystop_predict ledger (use "
                                  "another database or schema)")
            return 0
        rows = dict(conn.execute(f"SELECT key, value FROM {_META}").fetchall())
        if rows.get("application") != "earlystop_predict":
            raise LedgerError(f"{self.shown}: table {_META} does not mark an "
                              "earlystop_predict ledger")
        try:
            return int(rows.get("schema_version", 0))
        except ValueError:
            raise LedgerError(f"{self.shown}: schema_version {rows['schema_version']!r} "
                              f"in {_META} is not an integer") from None

    def lock_schema(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))

    def schema(self) -> list[str]:
        return [f"CREATE TABLE IF NOT EXISTS {_META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                *super().schema()]

    def write_version(self, conn: Any) -> None:
        conn.execute(f"INSERT INTO {_META} (key, value) VALUES ('application', "
                     "'earlystop_predict'), ('schema_version', %s) ON CONFLICT (key) DO "
                     "UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))

    def is_busy(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in _RETRY_STATES

    def is_lost(self, exc: BaseException, conn: Any) -> bool:
        return isinstance(exc, self.psycopg.OperationalError) and (
            conn is None or conn.closed or conn.broken)

    def in_transaction(self, conn: Any) -> bool:
        status = conn.info.transaction_status
        return status not in (self.psycopg.pq.TransactionStatus.IDLE,
                              self.psycopg.pq.TransactionStatus.UNKNOWN)


def dialect_for(target: Target, *, timeout: float, readonly: bool) -> Dialect:
    """The dialect of ``target`` (PostgreSQL imports psycopg, naming the extra if missing)."""
    cls = PostgresDialect if target.kind == "postgres" else SQLiteDialect
    return cls(target, timeout=timeout, readonly=readonly)
