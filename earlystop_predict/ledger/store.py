"""The run ledger: every run, epoch, forecast and decision in one database.

The ledger is an embedded SQLite file in WAL mode (stdlib :mod:`sqlite3` only) by
default, or a PostgreSQL database (``ledger="postgresql://..."``, the ``postgres`` extra)
that workers on several machines write at once; :mod:`earlystop_predict.ledger.target`
lists the accepted URLs, :mod:`earlystop_predict.ledger.dialect` the few things the two
do differently. Several processes may write one ledger at once: each write is one
transaction, retried while another writer holds the lock (SQLite's ``BEGIN IMMEDIATE``)
or after a serialization failure, a deadlock or a lost connection (PostgreSQL), so
nothing is lost. A committed epoch survives ``kill -9`` of the writer (SQLite: WAL with
``synchronous=NORMAL`` only risks the last transactions on power loss).

Tables (schema version :data:`SCHEMA_VERSION`, kept in SQLite's ``PRAGMA user_version``
or PostgreSQL's table ``esp_ledger``):

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
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from earlystop_predict.errors import ConfigError
from earlystop_predict.ledger.dialect import APPLICATION_ID, Dialect, dialect_for
from earlystop_predict.ledger.errors import (
    SCHEMA_VERSION,
    LedgerError,
    LedgerSchemaError,
    LedgerURLError,
)
from earlystop_predict.ledger.target import parse_target
from earlystop_predict.records.record import RunRecord, dumps, is_accuracy_like

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Ledger", "LedgerError", "LedgerSchemaError",
           "LedgerURLError"]
_T = TypeVar("_T")

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
_PUT_EPOCH = ("INSERT INTO epochs (run_id, epoch, data) VALUES (?, ?, ?) "
              "ON CONFLICT (run_id, epoch) DO UPDATE SET data = excluded.data")
_PUT_FORECAST = ("INSERT INTO forecasts (run_id, at_epoch, data) VALUES (?, ?, ?) "
                 "ON CONFLICT (run_id, at_epoch) DO UPDATE SET data = excluded.data")
_FINISH_RUN = """
UPDATE runs SET final_value = ?, final_epoch = ?, stopped = ?, status = ?, updated = ?
WHERE run_id = ?
"""


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
    """A ledger of runs, epochs, forecasts and decisions: an SQLite file or a
    PostgreSQL database.

    One instance holds one connection, reused for every call; it is safe to
    share between threads of one process (calls are serialised) and is reopened
    transparently in a forked child. Use one instance per process.

    Args:
        path: where the ledger lives: a file path (SQLite, created with its folder
            unless ``create=False``), ``sqlite:///relative.db``, ``sqlite:////abs.db``,
            or ``postgresql://user:password@host:port/database`` (also ``postgres://``;
            needs the ``postgres`` extra; the database must exist, the tables are
            created in it unless ``create=False``).
        create: create the file (or the tables) if missing. Default True.
        timeout: seconds a write waits for another writer (and a PostgreSQL open for
            the server) before failing with :class:`LedgerError`, > 0. Default 60.
        readonly: open for reading only: nothing created, no WAL switch, no write (a
            read-only SQLite file or folder can be read); every write method raises
            :class:`LedgerError`. The ledger must exist. Default False.

    Raises:
        LedgerURLError: ``path`` is a URL of another scheme or malformed (a
            :class:`~earlystop_predict.errors.ConfigError` too).
        LedgerError: the ledger is missing (``create=False``), not a ledger, unreadable,
            or its server cannot be reached.
        LedgerSchemaError: the ledger has a newer schema than this version supports.
        MissingExtraError: a ``postgresql://`` ledger without psycopg installed.

    Example:
        >>> led = Ledger(":memory:")
        >>> led.records()
        []
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 timeout: float = 60.0, readonly: bool = False) -> None:
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigError("timeout", "a number of seconds > 0", timeout)
        target = parse_target(path)
        self.url = target.shown  #: where the ledger lives, as messages print it
        self.path = target.shown  #: the SQLite file (or the URL, password hidden)
        self.timeout = float(timeout)
        self.readonly = bool(readonly)
        self.create = bool(create)
        self._memory = target.kind == "sqlite" and target.location == ":memory:"
        if target.kind == "sqlite" and not self._memory:
            self._check_file(Path(target.location))
        self._dialect: Dialect = dialect_for(target, timeout=self.timeout,
                                             readonly=self.readonly)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._open()

    def _check_file(self, p: Path) -> None:
        """An SQLite ledger's file: not a folder; missing, created (its folder) if allowed."""
        if p.is_dir():
            raise LedgerError(f"{self.path}: is a directory, not a ledger file")
        if not p.exists():
            if not self.create or self.readonly:
                raise LedgerError(f"{self.path}: no ledger at this path")
            p.parent.mkdir(parents=True, exist_ok=True)

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgres"``."""
        return self._dialect.target.kind

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        d = self._dialect
        conn = d.connect()
        try:
            d.configure(conn)
            version = d.read_version(conn)
            if version > SCHEMA_VERSION:
                raise LedgerSchemaError(self.path, version)
            if self.readonly:
                d.check_readable(conn, version)
            else:
                self._prepare(conn, version)
        except d.database_errors as exc:
            conn.close()
            raise LedgerError(f"{self.path}: not a readable ledger: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._pid = os.getpid()

    def _prepare(self, conn: Any, version: int) -> None:
        """A writer's open: durability settings, and the schema if it is not there yet."""
        d = self._dialect
        self._retry(lambda: d.durability(conn), reconnect=False)
        if version < SCHEMA_VERSION:
            if not self.create and d.target.kind != "sqlite":
                raise LedgerError(f"{self.path}: no ledger in this database (create=False)")
            self._retry(lambda: self._create_schema(conn), reconnect=False)

    def _create_schema(self, conn: Any) -> None:
        d = self._dialect
        conn.execute(d.begin_write)
        try:
            d.lock_schema(conn)
            version = d.read_version(conn)  # another process may have won the race
            if version > SCHEMA_VERSION:
                raise LedgerSchemaError(self.path, version)
            if version < SCHEMA_VERSION:
                for stmt in d.schema():
                    conn.execute(stmt)
                d.write_version(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: Any) -> None:
        """Roll back an open transaction; a connection already lost is left as it is."""
        try:
            if self._dialect.in_transaction(conn):
                conn.execute("ROLLBACK")
        except self._dialect.errors:
            pass

    @property
    def conn(self) -> Any:
        """The open connection (``sqlite3`` or psycopg; reopened after a fork)."""
        if self._conn is None:
            raise LedgerError(f"{self.path}: the ledger is closed")
        if os.getpid() != self._pid:
            # A connection must not cross fork(); leave the parent's alone, open anew
            # (psycopg, like sqlite3, does not close in a child what its parent opened).
            self._conn = None
            self._open()
        return self._conn

    # ----------------------------------------------------------------- writing
    def _retry(self, fn: Callable[[], _T], *, reconnect: bool = True) -> _T:
        """Run ``fn``, retrying while another writer is in the way (or, with
        ``reconnect``, the connection to a server was lost and is opened again), for at
        most :attr:`timeout` s."""
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                return fn()
            except self._dialect.errors as exc:
                lost = reconnect and self._dialect.is_lost(exc, self._conn)
                if not (lost or self._dialect.is_busy(exc)):
                    raise LedgerError(f"{self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    what = "the connection is lost" if lost else \
                        "still locked by another writer"
                    raise LedgerError(f"{self.path}: {what} after {self.timeout:g} s "
                                      f"({exc})") from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1 if not lost else 1.0)
                if lost:
                    self._reconnect()

    def _reconnect(self) -> None:
        """Open a new connection after a lost one (a failure is retried by the caller)."""
        old, self._conn = self._conn, None
        try:
            old.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close
            pass
        try:
            self._open()
        except LedgerError:
            self._conn = old  # still broken: the next attempt fails as lost, and retries

    def _write(self, fn: Callable[[Any], None]) -> None:
        """Run ``fn`` in one write transaction, retried as a whole when busy or lost."""
        if self.readonly:
            raise LedgerError(f"{self.path}: the ledger is open read-only")
        with self._lock:
            self.conn  # noqa: B018  (reopens after a fork)

            def attempt() -> None:
                conn = self._conn
                conn.execute(self._dialect.begin_write)
                try:
                    fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise

            self._retry(attempt)

    def _x(self, conn: Any, sql: str, params: tuple[Any, ...] = (), **tokens: str) -> Any:
        """Execute one of the ledger's statements in this dialect; the cursor."""
        return conn.execute(self._dialect.sql(sql, **tokens), params)

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
        self._write(lambda c: self._x(c, _UPSERT_RUN, params))

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

        def tx(c: Any) -> None:
            if self._x(c, _TOUCH_RUN, (now, run_id)).rowcount == 0:
                raise LedgerError(f"{self.path}: run {run_id!r} was not started "
                                  "(call start_run first)")
            self._x(c, _DROP_LATER_EPOCHS, (run_id, epoch))
            self._x(c, _DROP_LATER_FORECASTS, (run_id, epoch))
            self._x(c, _PUT_EPOCH, (run_id, epoch, row_json))
            if fc_json is not None:
                self._x(c, _PUT_FORECAST, (run_id, at_epoch, fc_json))

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

        def tx(c: Any) -> None:
            if self._x(c, _FINISH_RUN, params).rowcount == 0:
                raise LedgerError(f"{self.path}: run {run_id!r} was not started "
                                  "(call start_run first)")

        self._write(tx)

    # ----------------------------------------------------------------- reading
    def _read(self, sql: str, params: tuple[Any, ...] = (), **tokens: str
              ) -> list[tuple[Any, ...]]:
        """The rows of one query (its errors a :class:`LedgerError`)."""
        with self._lock:
            self.conn  # noqa: B018  (reopens after a fork)
            return self._retry(lambda: self._x(self._conn, sql, params, **tokens).fetchall())

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
            "SELECT {agg}(final_value) FROM runs WHERE study {is} ? AND metric = ? "
            "AND status = 'completed' AND final_value IS NOT NULL AND run_id {is_not} ? "
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
            "SELECT {agg}(n) FROM (SELECT {number} AS n FROM (SELECT {json_value} AS v "
            "FROM runs r JOIN epochs e ON e.run_id = r.run_id WHERE r.study {is} ? "
            "AND r.metric = ? AND r.status IN ('completed', 'stopped') "
            "AND r.run_id {is_not} ?) AS t) AS u WHERE n IS NOT NULL "
            "AND (? = 0 OR n BETWEEN 0 AND 1)",
            study, metric, mode, exclude_run)

    def _best(self, query: str, study: str | None, metric: str, mode: str,
              exclude_run: str | None) -> float | None:
        """Run one of the best-value queries (``{agg}`` the aggregate of ``mode``; its
        parameters study, metric, the run left out, whether the metric is a fraction)."""
        if mode not in ("min", "max"):
            raise ConfigError("mode", "'min' or 'max'", mode)
        rows = self._read(query, (study, metric, exclude_run, int(is_accuracy_like(metric))),
                          agg="MAX" if mode == "max" else "MIN")
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    def runs(self, study: str | None = None) -> list[dict[str, Any]]:
        """One summary dict per run (no epochs): id, study, status, final value..."""
        where, params = ("WHERE study {is} ?", (study,)) if study is not None else ("", ())
        rows = self._read(
            "SELECT r.run_id, r.study, r.task, r.metric, r.mode, r.target_epoch, r.status, "
            "r.created, r.updated, r.final_value, r.final_epoch, r.stopped, "
            "(SELECT COUNT(*) FROM epochs e WHERE e.run_id = r.run_id) "
            f"FROM runs r {where} ORDER BY r.created, r.run_id{{binary}}", params)
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
        where, params = ("WHERE study {is} ?", (study,)) if study is not None else ("", ())
        sub = "SELECT run_id FROM runs " + where
        queries = ("SELECT run_id, study, task, metric, mode, hparams, meta, extra, "
                   f"target_epoch, status, stopped FROM runs {where} "
                   "ORDER BY created, run_id{binary}",
                   f"SELECT run_id, data, epoch FROM epochs WHERE run_id IN ({sub}) "
                   "ORDER BY run_id{binary}, epoch",
                   f"SELECT run_id, data FROM forecasts WHERE run_id IN ({sub}) "
                   "ORDER BY run_id{binary}, at_epoch")
        with self._lock:
            self.conn  # noqa: B018  (reopens after a fork)
            runs, eps, fcs = self._retry(lambda: self._snapshot(queries, params))
        epochs = self._cells(eps, "epochs")
        forecasts = self._cells(fcs, "forecasts")
        return [self._record(row, epochs.get(row[0], []), forecasts.get(row[0], []))
                for row in runs]

    def _snapshot(self, queries: tuple[str, ...], params: tuple[Any, ...]) -> list[list[Any]]:
        """The rows of each query, read in one consistent snapshot of the tables."""
        conn = self._conn
        conn.execute(self._dialect.begin_read)
        try:
            out = [self._x(conn, q, params).fetchall() for q in queries]
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        return out
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
