"""The run ledger: every run, epoch, forecast and decision in one SQLite file.

The ledger is an embedded SQLite database in WAL mode (stdlib :mod:`sqlite3`
only). Several processes may write one ledger at once: each write is one
``BEGIN IMMEDIATE`` transaction, retried while another writer holds the lock, so
nothing is lost. A committed epoch survives ``kill -9`` of the writer (WAL with
``synchronous=NORMAL`` only risks the last transactions on power loss).

Tables (schema version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``):

- ``runs``: one row per run (study, task, metric, mode, hparams, meta, target
  epoch, status ``running | completed | stopped | failed...``, final value).
- ``epochs``: one row per (run, epoch): the epoch's logged values as JSON.
- ``forecasts``: one row per (run, epoch): the decision's RUN_RECORD.md
  ``forecasts`` entry as JSON.

Example:
    >>> import tempfile, os
    >>> from earlystop_predict.records.record import RunRecord
    >>> path = os.path.join(tempfile.mkdtemp(), "ledger.db")
    >>> with Ledger(path) as led:
    ...     led.start_run(RunRecord("r1"), study="s", target_epoch=10)
    ...     led.finish_run("r1", final_value=0.9, final_epoch=10, status="completed")
    ...     led.best_final("s", "val_accuracy", "max")
    0.9
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from earlystop_predict.errors import ConfigError, EarlystopPredictError
from earlystop_predict.records.record import RunRecord, dumps, is_accuracy_like

SCHEMA_VERSION = 1
APPLICATION_ID = 0x45535031  # "ESP1": marks the file as an earlystop_predict ledger
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    study        TEXT,
    task         TEXT,
    metric       TEXT NOT NULL,
    mode         TEXT NOT NULL,
    hparams      TEXT NOT NULL DEFAULT '{}',
    meta         TEXT NOT NULL DEFAULT '{}',
    extra        TEXT NOT NULL DEFAULT '{}',
    target_epoch INTEGER,
    status       TEXT NOT NULL DEFAULT 'running',
    created      REAL NOT NULL,
    updated      REAL NOT NULL,
    final_value  REAL,
    final_epoch  INTEGER,
    stopped      TEXT
);
CREATE INDEX IF NOT EXISTS runs_study ON runs (study, metric, status);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL,
    epoch  INTEGER NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forecasts (
    run_id   TEXT NOT NULL,
    at_epoch INTEGER NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (run_id, at_epoch)
) WITHOUT ROWID;
"""

_UPSERT_RUN = """
INSERT INTO runs (run_id, study, task, metric, mode, hparams, meta, extra, target_epoch,
                  status, created, updated, final_value, final_epoch, stopped)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, NULL, NULL, NULL)
ON CONFLICT (run_id) DO UPDATE SET
    study = excluded.study, task = excluded.task, metric = excluded.metric,
    mode = excluded.mode, hparams = excluded.hparams, meta = excluded.meta,
    extra = excluded.extra, target_epoch = excluded.target_epoch, status = 'running',
    updated = excluded.updated, final_value = NULL, final_epoch = NULL, stopped = NULL
"""
_TOUCH_RUN = "UPDATE runs SET updated = ? WHERE run_id = ?"
_DROP_LATER_EPOCHS = "DELETE FROM epochs WHERE run_id = ? AND epoch > ?"
_DROP_LATER_FORECASTS = "DELETE FROM forecasts WHERE run_id = ? AND at_epoch >= ?"
_PUT_EPOCH = "INSERT OR REPLACE INTO epochs (run_id, epoch, data) VALUES (?, ?, ?)"
_PUT_FORECAST = "INSERT OR REPLACE INTO forecasts (run_id, at_epoch, data) VALUES (?, ?, ?)"
_FINISH_RUN = """
UPDATE runs SET final_value = ?, final_epoch = ?, stopped = ?, status = ?, updated = ?
WHERE run_id = ?
"""


class LedgerError(EarlystopPredictError, OSError):
    """The ledger file cannot be used: missing, not a ledger, locked too long, corrupt."""


class LedgerSchemaError(LedgerError):
    """The ledger was written by a newer earlystop_predict (schema version too high)."""

    def __init__(self, path: object, found: int, supported: int = SCHEMA_VERSION) -> None:
        self.path = str(path)
        self.found = found
        self.supported = supported
        super().__init__(f"{self.path}: ledger schema version {found} is newer than the "
                         f"supported version {supported}; upgrade earlystop_predict to read it")


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _loads(text: str | None, default: Any, where: str = "a cell",
           kind: type | None = None) -> Any:
    """A JSON cell of the ledger; a damaged one raises :class:`LedgerError` naming it.

    Args:
        text: the cell, None for SQL NULL (gives ``default``).
        default: the value of a NULL cell.
        where: the file, run and column, for the message.
        kind: the type the value must have (e.g. ``dict``), or None for any.
    """
    if text is None:
        return default
    try:
        value = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise LedgerError(f"{where}: not valid JSON ({exc}); the ledger was changed outside "
                          "earlystop_predict") from None
    if kind is not None and value is not None and not isinstance(value, kind):
        raise LedgerError(f"{where}: a JSON {type(value).__name__} where an object belongs; "
                          "the ledger was changed outside earlystop_predict")
    return value


class Ledger:
    """An SQLite ledger of runs, epochs, forecasts and decisions.

    One instance holds one connection, reused for every call; it is safe to
    share between threads of one process (calls are serialised) and is reopened
    transparently in a forked child. Use one instance per process.

    Args:
        path: the database file; created (with its folder) unless ``create=False``.
        create: create the file if it does not exist. Default True.
        timeout: seconds a write waits for another writer before failing with
            :class:`LedgerError`, > 0. Default 60.
        readonly: open for reading only (SQLite ``mode=ro``): no schema, no WAL switch,
            no write; a read-only file or folder can be read, and every write method
            raises :class:`LedgerError`. The file must exist. Default False.

    Raises:
        LedgerError: the file is missing (``create=False``), not a ledger, or unreadable.
        LedgerSchemaError: the file has a newer schema than this version supports.

    Example:
        >>> led = Ledger(":memory:")
        >>> led.records()
        []
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 timeout: float = 60.0, readonly: bool = False) -> None:
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigError("timeout", "a number of seconds > 0", timeout)
        self.path = str(path)
        self.timeout = float(timeout)
        self.readonly = bool(readonly)
        self._memory = self.path == ":memory:"
        if not self._memory:
            p = Path(self.path)
            if p.is_dir():
                raise LedgerError(f"{self.path}: is a directory, not a ledger file")
            if not p.exists():
                if not create or self.readonly:
                    raise LedgerError(f"{self.path}: no ledger at this path")
                p.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._open()

    # ------------------------------------------------------------------ opening
    def _connect(self) -> sqlite3.Connection:
        target, uri = self.path, False
        if self.readonly and not self._memory:
            target, uri = self._readonly_uri(), True
        try:
            conn = sqlite3.connect(target, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False, cached_statements=64, uri=uri)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: cannot open ledger: {exc}") from exc
        return conn

    def _readonly_uri(self) -> str:
        """The SQLite URI of a read-only open that writes nothing next to the ledger.

        With no ``-wal`` file beside it no writer has the ledger open and every commit
        is in the main file: it is read as ``immutable`` (no ``-shm``/``-wal`` created,
        so a read-only folder works). With one, a writer is live (or was killed): it is
        opened ``mode=ro`` through the writer's WAL, seeing every committed epoch.
        """
        uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        if not os.path.exists(self.path + "-wal"):
            uri += "&immutable=1"
        return uri

    def _open(self) -> None:
        conn = self._connect()
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            version = self._read_version(conn)
            if version > SCHEMA_VERSION:
                raise LedgerSchemaError(self.path, version)
            if self.readonly:
                self._check_readable(conn, version)
                self._conn = conn
                self._pid = os.getpid()
                return
            if not self._memory:
                self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")
            if version < SCHEMA_VERSION:
                self._retry(lambda: self._create_schema(conn))
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(f"{self.path}: not a readable ledger: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._pid = os.getpid()

    def _read_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if app_id not in (0, APPLICATION_ID):
            raise LedgerError(f"{self.path}: an SQLite file of another application "
                              f"(application_id {app_id}), not an earlystop_predict ledger")
        if version == 0:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not {"runs", "epochs", "forecasts"} <= tables:
                raise LedgerError(f"{self.path}: an SQLite file with tables "
                                  f"{sorted(tables)}, not an earlystop_predict ledger")
        return version

    def _check_readable(self, conn: sqlite3.Connection, version: int) -> None:
        """A ledger opened read-only must already hold the tables (none is created)."""
        conn.execute("PRAGMA query_only = ON")
        if version < SCHEMA_VERSION:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"runs", "epochs", "forecasts"} <= tables:
                raise LedgerError(f"{self.path}: an empty SQLite file, not a ledger yet")

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._read_version(conn)  # another process may have won the race
            if version > SCHEMA_VERSION:
                raise LedgerSchemaError(self.path, version)
            if version < SCHEMA_VERSION:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection (reopened after a fork)."""
        if self._conn is None:
            raise LedgerError(f"{self.path}: the ledger is closed")
        if os.getpid() != self._pid:
            # A connection must not cross fork(); leave the parent's alone, open anew.
            self._conn = None
            self._open()
        return self._conn  # type: ignore[return-value]

    # ----------------------------------------------------------------- writing
    def _retry(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, retrying while another process holds the write lock."""
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                if not (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                    raise LedgerError(f"{self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise LedgerError(f"{self.path}: still locked by another writer after "
                                      f"{self.timeout:g} s") from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)

    def _write(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction, retried as a whole when busy."""
        if self.readonly:
            raise LedgerError(f"{self.path}: the ledger is open read-only")
        with self._lock:
            conn = self.conn

            def attempt() -> None:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

            self._retry(attempt)

    def start_run(self, record: RunRecord, *, study: str | None = None,
                  target_epoch: int | None = None) -> None:
        """Insert the run, or reset it to ``running`` if it exists (a resume or restart).

        Epochs already logged are kept; a replayed epoch replaces them from there on
        (see :meth:`log_epoch`).

        Args:
            record: the run (its id, task, metric, mode, hparams, meta and unknown keys).
            study: name grouping comparable runs (incumbent rule), or None.
            target_epoch: 1-based epoch the run forecasts, or None if unknown.
        """
        now = time.time()
        params = (record.run_id, study, record.task, record.metric, record.mode,
                  dumps(record.hparams), dumps(record.meta), dumps(record.extra),
                  None if target_epoch is None else int(target_epoch), now, now)
        self._write(lambda c: c.execute(_UPSERT_RUN, params))

    def log_epoch(self, run_id: str, row: Mapping[str, Any], decision: Any = None) -> None:
        """Record one epoch and its decision in one transaction.

        A replayed epoch (a resume from an earlier checkpoint) replaces the stored one
        and drops every later epoch and forecast of the run.

        Args:
            run_id: the run, as given to :meth:`start_run`.
            row: the epoch's values, with a 1-based ``epoch``.
            decision: the :class:`~earlystop_predict.policy.stop.Decision` made at this epoch
                (stored as its ``to_dict()``), or None.
        """
        epoch = int(row["epoch"])
        row_json = dumps(dict(row))
        fc_json = dumps(decision.to_dict()) if decision is not None else None
        at_epoch = int(getattr(decision, "epoch", 0) or epoch) if decision is not None else 0

        now = time.time()

        def tx(c: sqlite3.Connection) -> None:
            if c.execute(_TOUCH_RUN, (now, run_id)).rowcount == 0:
                raise LedgerError(f"{self.path}: run {run_id!r} was not started "
                                  "(call start_run first)")
            c.execute(_DROP_LATER_EPOCHS, (run_id, epoch))
            c.execute(_DROP_LATER_FORECASTS, (run_id, epoch))
            c.execute(_PUT_EPOCH, (run_id, epoch, row_json))
            if fc_json is not None:
                c.execute(_PUT_FORECAST, (run_id, at_epoch, fc_json))

        self._write(tx)

    def finish_run(self, run_id: str, *, final_value: float | None = None,
                   final_epoch: int | None = None, stopped: Mapping[str, Any] | None = None,
                   status: str = "completed") -> None:
        """Close the run with its final value, last epoch and stop (if any).

        Args:
            run_id: the run.
            final_value: the target metric at the last epoch trained, None if unknown.
            final_epoch: the last 1-based epoch trained.
            stopped: ``{"epoch", "reason"}`` if the run was stopped early, else None.
            status: ``"completed"`` (trained to its end: counts as an incumbent),
                ``"stopped"``, ``"failed"``... Default ``"completed"``.
        """
        if not isinstance(status, str) or not status:
            raise ConfigError("status", "a non-empty string", status)
        value = None if final_value is None else float(final_value)
        if value is not None and value != value:  # NaN
            value = None
        params = (value, None if final_epoch is None else int(final_epoch),
                  None if stopped is None else dumps(dict(stopped)), status, time.time(), run_id)

        def tx(c: sqlite3.Connection) -> None:
            if c.execute(_FINISH_RUN, params).rowcount == 0:
                raise LedgerError(f"{self.path}: run {run_id!r} was not started "
                                  "(call start_run first)")

        self._write(tx)

    # ----------------------------------------------------------------- reading
    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self.conn
            try:
                return self._retry(lambda: conn.execute(sql, params).fetchall())
            except sqlite3.DatabaseError as exc:
                raise LedgerError(f"{self.path}: {exc}") from exc

    def best_final(self, study: str | None, metric: str, mode: str,
                   exclude_run: str | None = None) -> float | None:
        """The best final value among the study's completed runs, None if none (the
        incumbent rule's bar is :meth:`best_value`, which counts stopped runs too).

        Stopped runs never count: they did not reach their end. Nor do values outside
        an accuracy-like metric's [0, 1] (a run that logged percents).

        Args:
            study: the study (None matches runs without a study).
            metric: the target metric; only runs on this metric count.
            mode: ``"max"`` (highest is best) or ``"min"``.
            exclude_run: a run to leave out (the one asking). Default None.
        """
        return self._best(
            "SELECT {agg}(final_value) FROM runs WHERE study IS ? AND metric = ? "
            "AND status = 'completed' AND final_value IS NOT NULL AND run_id IS NOT ? "
            "AND (? = 0 OR final_value BETWEEN 0 AND 1)", study, metric, mode, exclude_run)

    def best_value(self, study: str | None, metric: str, mode: str,
                   exclude_run: str | None = None) -> float | None:
        """The best value any finished run of the study reached, None if none: the bar
        of the incumbent rule.

        A finished run is a completed or a stopped one (a stopped run is censored
        evidence: what it reached is reached, whatever it would have done after); its
        value is its best epoch's (what ``restore_best_weights`` keeps), the same as
        ``earlystop-predict replay`` scores. Running, failed and diverged runs do not
        count, nor values outside an accuracy-like metric's [0, 1].

        Args:
            study: the study (None matches runs without a study).
            metric: the target metric; only runs on this metric count.
            mode: ``"max"`` (highest is best) or ``"min"``.
            exclude_run: a run to leave out (the one asking). Default None.
        """
        return self._best(
            "SELECT {agg}(v) FROM (SELECT json_extract(e.data, '$.\"' || r.metric || '\"') "
            "AS v FROM runs r JOIN epochs e ON e.run_id = r.run_id WHERE r.study IS ? "
            "AND r.metric = ? AND r.status IN ('completed', 'stopped') AND r.run_id IS NOT ?) "
            "WHERE typeof(v) IN ('real', 'integer') AND (? = 0 OR v BETWEEN 0 AND 1)",
            study, metric, mode, exclude_run)

    def _best(self, query: str, study: str | None, metric: str, mode: str,
              exclude_run: str | None) -> float | None:
        """Run one of the best-value queries (``{agg}`` the aggregate of ``mode``; its
        parameters study, metric, the run left out, whether the metric is a fraction)."""
        if mode not in ("min", "max"):
            raise ConfigError("mode", "'min' or 'max'", mode)
        rows = self._read(query.format(agg="MAX" if mode == "max" else "MIN"),
                          (study, metric, exclude_run, int(is_accuracy_like(metric))))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    def runs(self, study: str | None = None) -> list[dict[str, Any]]:
        """One summary dict per run (no epochs): id, study, status, final value..."""
        where, params = ("WHERE study IS ?", (study,)) if study is not None else ("", ())
        rows = self._read(
            "SELECT r.run_id, r.study, r.task, r.metric, r.mode, r.target_epoch, r.status, "
            "r.created, r.updated, r.final_value, r.final_epoch, r.stopped, "
            "(SELECT COUNT(*) FROM epochs e WHERE e.run_id = r.run_id) "
            f"FROM runs r {where} ORDER BY r.created, r.run_id", params)
        keys = ("run_id", "study", "task", "metric", "mode", "target_epoch", "status",
                "created", "updated", "final_value", "final_epoch", "stopped", "n_epochs")
        out = []
        for r in rows:
            d = dict(zip(keys, r, strict=True))
            d["stopped"] = _loads(d["stopped"], None,
                                  f"{self.path}: run {d['run_id']!r}, column 'stopped'", dict)
            out.append(d)
        return out

    def records(self, study: str | None = None) -> list[RunRecord]:
        """Every run (of ``study``, if given) as a :class:`RunRecord`, oldest first.

        Each record holds its epochs in order, its ``forecasts`` and ``stopped``; the
        ledger's study, status and target epoch are kept as unknown keys
        (``study``, ``status``, ``target_epoch``). Records are not validated: a run
        that logged no epoch yet has none.
        """
        where, params = ("WHERE study IS ?", (study,)) if study is not None else ("", ())
        with self._lock:
            conn = self.conn

            def snapshot() -> tuple[list[Any], list[Any], list[Any]]:
                conn.execute("BEGIN")  # one consistent read snapshot of the three tables
                try:
                    runs = conn.execute(
                        "SELECT run_id, study, task, metric, mode, hparams, meta, extra, "
                        "target_epoch, status, stopped FROM runs "
                        f"{where} ORDER BY created, run_id", params).fetchall()
                    sub = "SELECT run_id FROM runs " + where
                    eps = conn.execute(
                        f"SELECT run_id, data, epoch FROM epochs WHERE run_id IN ({sub}) "
                        "ORDER BY run_id, epoch", params).fetchall()
                    fcs = conn.execute(
                        f"SELECT run_id, data FROM forecasts WHERE run_id IN ({sub}) "
                        "ORDER BY run_id, at_epoch", params).fetchall()
                finally:
                    conn.execute("COMMIT")
                return runs, eps, fcs

            try:
                runs, eps, fcs = self._retry(snapshot)
            except sqlite3.DatabaseError as exc:
                raise LedgerError(f"{self.path}: {exc}") from exc
        epochs = self._cells(eps, "epochs")
        forecasts = self._cells(fcs, "forecasts")
        return [self._record(row, epochs.get(row[0], []), forecasts.get(row[0], []))
                for row in runs]

    def _cells(self, rows: list[Any], table: str) -> dict[str, list[dict[str, Any]]]:
        """The JSON objects of an epochs or forecasts table, per run, in order; an epoch
        row's ``epoch`` is its key column's (the value the ledger ordered it by)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for run_id, data, *key in rows:
            where = f"{self.path}: {table} row of run {run_id!r}"
            value = _loads(data, {}, where, dict)
            if key:
                if not isinstance(key[0], int) or isinstance(key[0], bool):
                    raise LedgerError(f"{where}: epoch {key[0]!r} is not an integer; the "
                                      "ledger was changed outside earlystop_predict")
                value["epoch"] = key[0]
            out.setdefault(run_id, []).append(value)
        return out

    def _record(self, row: tuple[Any, ...], epochs: list[dict[str, Any]],
                fc: list[dict[str, Any]]) -> RunRecord:
        """One run of the ``runs`` table as a record, with its epochs and forecasts."""
        (run_id, st, task, metric, mode, hp, meta, extra, target, status, stopped) = row
        where = f"{self.path}: run {run_id!r}"
        stop = _loads(stopped, None, f"{where}, column 'stopped'", dict)
        if stop is None and status == "running":  # unfinished or killed: a stop still counts
            first = next((f for f in fc if f.get("stop")), None)
            if first is not None:
                stop = {"epoch": first.get("at_epoch"), "reason": first.get("reason", "")}
        extra_d = _loads(extra, {}, f"{where}, column 'extra'", dict)
        extra_d.update(study=st, status=status, target_epoch=target)
        return RunRecord(run_id=run_id, metric=metric, mode=mode, task=task,
                         hparams=_loads(hp, {}, f"{where}, column 'hparams'", dict),
                         meta=_loads(meta, {}, f"{where}, column 'meta'", dict),
                         epochs=epochs, forecasts=fc, stopped=stop, extra=extra_d)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None and os.getpid() == self._pid:
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"
