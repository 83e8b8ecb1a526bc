"""The ledger: round trip, resume, incumbent, schema, concurrency, kill -9, export; each
behaviour on both backends (``ledger_target``: an SQLite file, a PostgreSQL database where
a server starts), and the ledger URLs (``sqlite:///``, ``postgresql://``)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO_ROOT, constant, feed, make_record, run_python

from earlystop_predict.cli import main
from earlystop_predict.forecast.base import Forecast
from earlystop_predict.ledger.store import SCHEMA_VERSION, Ledger, LedgerError, LedgerSchemaError
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.policy.stop import StopPolicy
from earlystop_predict.records.record import read_records

POLICY = StopPolicy(threshold=0.8, min_epochs=2)


def _decision(epoch: int, mean: float = 0.6):
    fc = Forecast(mean, {"0.1": mean - 0.05, "0.5": mean, "0.9": mean + 0.05}, "scripted",
                  "", epoch, 10)
    return POLICY.decide(fc, epoch=epoch)


def _log(led: Ledger, run_id: str, values, start: int = 1, mean: float = 0.6) -> None:
    for i, v in enumerate(values):
        e = start + i
        led.log_epoch(run_id, {"epoch": e, "val_accuracy": v, "val_loss": 1.0 - v},
                      _decision(e, mean))


@pytest.fixture
def ledger_path(tmp_path):
    return tmp_path / "sub" / "ledger.db"


# ------------------------------------------------------------------------- round trip
def test_round_trip(ledger_target):
    rec = make_record("r1", values=(), extra={"owner": "me"})
    with Ledger(ledger_target) as led:
        led.start_run(rec, study="s1", target_epoch=10)
        _log(led, "r1", [0.3, 0.4, 0.5])
        led.finish_run("r1", final_value=0.5, final_epoch=3,
                       stopped={"epoch": 3, "reason": "poor"}, status="stopped")
        [got] = led.records()
    assert ledger_target.startswith("postgresql:") or os.path.exists(ledger_target)
    assert (got.run_id, got.task, got.metric, got.mode) == ("r1", "unit", "val_accuracy", "max")
    assert got.hparams == rec.hparams and got.meta == rec.meta
    assert [r["epoch"] for r in got.epochs] == [1, 2, 3]
    assert got.epochs[2] == {"epoch": 3, "val_accuracy": 0.5, "val_loss": 0.5}
    assert [f["at_epoch"] for f in got.forecasts] == [1, 2, 3]
    assert got.forecasts[1] == _decision(2).to_dict()
    assert got.forecasts[1]["stop"] is True and got.forecasts[0]["stop"] is False
    assert got.stopped == {"epoch": 3, "reason": "poor"}
    assert got.extra == {"owner": "me", "study": "s1", "status": "stopped", "target_epoch": 10}
    got.validate()


def test_records_filter_by_study_and_empty_run(ledger_target):
    with Ledger(ledger_target) as led:
        led.start_run(make_record("a", values=()), study="s1", target_epoch=10)
        led.start_run(make_record("b", values=()), study="s2", target_epoch=10)
        _log(led, "a", [0.5])
        assert [r.run_id for r in led.records(study="s1")] == ["a"]
        assert [r.run_id for r in led.records()] == ["a", "b"]
        assert led.records(study="s2")[0].epochs == []
        assert led.records(study="nope") == []


def test_unknown_run_is_an_error(ledger_target):
    with Ledger(ledger_target) as led:
        with pytest.raises(LedgerError, match="'ghost' was not started"):
            led.log_epoch("ghost", {"epoch": 1, "val_accuracy": 0.5}, _decision(1))
        with pytest.raises(LedgerError, match="'ghost' was not started"):
            led.finish_run("ghost", final_value=0.5)
        assert led.records() == []
        assert led.conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 0


def test_unfinished_run_keeps_its_stop_decision(ledger_target):
    with Ledger(ledger_target) as led:
        led.start_run(make_record("r", values=()), target_epoch=10)
        _log(led, "r", [0.3, 0.4])
        [got] = led.records()
    assert got.extra["status"] == "running"
    assert got.stopped == {"epoch": 2, "reason": _decision(2).reason}


# ----------------------------------------------------------------------------- resume
def test_replayed_epoch_replaces_the_tail(ledger_target):
    with Ledger(ledger_target) as led:
        led.start_run(make_record("r", values=()), study="s", target_epoch=10)
        _log(led, "r", [0.1, 0.2, 0.3, 0.4, 0.5], mean=0.9)
    # A new process resumes from the epoch-2 checkpoint and replays epoch 3.
    with Ledger(ledger_target) as led:
        led.start_run(make_record("r", values=()), study="s", target_epoch=10)
        _log(led, "r", [0.33], start=3, mean=0.95)
        [got] = led.records()
    assert [(r["epoch"], r["val_accuracy"]) for r in got.epochs] == [(1, .1), (2, .2), (3, .33)]
    assert [f["at_epoch"] for f in got.forecasts] == [1, 2, 3]
    assert got.forecasts[2]["mean"] == 0.95 and got.forecasts[1]["mean"] == 0.9
    assert got.extra["status"] == "running"


def test_monitor_resume_through_the_ledger(ledger_target):
    mon = ForecastMonitor(target_epoch=10, threshold=0.5, min_epochs=3, model=constant(0.9),
                          ledger=ledger_target, run_id="m1", study="s")
    mon.begin()
    feed(mon, [0.1, 0.2, 0.3, 0.4])
    state = mon.state_dict()
    mon2 = ForecastMonitor(target_epoch=10, threshold=0.5, min_epochs=3, model=constant(0.9),
                           ledger=ledger_target, run_id="m1", study="s")
    state["record"]["epochs"] = state["record"]["epochs"][:2]
    state["record"]["forecasts"] = state["record"]["forecasts"][:2]
    mon2.load_state_dict(state)
    mon2.begin(resume=True)
    feed(mon2, [0.31, 0.41, 0.5], start=3)
    mon2.end()
    [got] = mon2.ledger.records()
    assert [r["val_accuracy"] for r in got.epochs] == [0.1, 0.2, 0.31, 0.41, 0.5]
    assert [f["at_epoch"] for f in got.forecasts] == [1, 2, 3, 4, 5]
    assert got.extra["status"] == "completed" and got.stopped is None
    mon.ledger.close()
    mon2.ledger.close()


# ------------------------------------------------------------------------ best_final
def _finished(led, run_id, value, *, study="s", metric="val_accuracy", status="completed"):
    rec = make_record(run_id, values=(), metric=metric)
    led.start_run(rec, study=study, target_epoch=10)
    led.finish_run(run_id, final_value=value, final_epoch=10, status=status,
                   stopped={"epoch": 4, "reason": "x"} if status == "stopped" else None)


def test_best_final(ledger_target):
    with Ledger(ledger_target) as led:
        assert led.best_final("s", "val_accuracy", "max") is None
        _finished(led, "a", 0.80)
        _finished(led, "b", 0.85)
        _finished(led, "c", 0.99, status="stopped")  # did not reach its end
        _finished(led, "d", 0.95, study="other")
        _finished(led, "e", 0.97, metric="val_f1")
        _finished(led, "f", None)
        led.start_run(make_record("g", values=()), study="s", target_epoch=10)  # running
        assert led.best_final("s", "val_accuracy", "max") == 0.85
        assert led.best_final("s", "val_accuracy", "max", exclude_run="b") == 0.80
        assert led.best_final("s", "val_accuracy", "min") == 0.80
        assert led.best_final("other", "val_accuracy", "max") == 0.95
        assert led.best_final(None, "val_accuracy", "max") is None
        # A restarted run is running again: it no longer counts.
        led.start_run(make_record("b", values=()), study="s", target_epoch=10)
        assert led.best_final("s", "val_accuracy", "max") == 0.80


def test_best_value_counts_what_finished_runs_reached_stopped_ones_too(ledger_target):
    with Ledger(ledger_target) as led:
        assert led.best_value("s", "val_accuracy", "max") is None
        for run_id, values, status in (("a", (0.5, 0.8, 0.7), "completed"),
                                       ("b", (0.6, 0.85), "stopped"),      # censored
                                       ("c", (0.99,), "failed"),
                                       ("d", (0.97,), "diverged"),
                                       ("e", (40.0,), "completed")):       # percents
            led.start_run(make_record(run_id, values=values), study="s", target_epoch=10)
            for k, v in enumerate(values, start=1):
                led.log_epoch(run_id, {"epoch": k, "val_accuracy": v}, None)
            led.finish_run(run_id, final_value=values[-1], final_epoch=len(values),
                           status=status, stopped=None)
        led.start_run(make_record("g", values=()), study="s", target_epoch=10)  # running
        led.log_epoch("g", {"epoch": 1, "val_accuracy": 0.98}, None)
        assert led.best_value("s", "val_accuracy", "max") == 0.85
        assert led.best_value("s", "val_accuracy", "max", exclude_run="b") == 0.8
        assert led.best_value("s", "val_accuracy", "min") == 0.5
        assert led.best_value("other", "val_accuracy", "max") is None


def test_monitor_stops_a_run_that_cannot_beat_the_incumbent(ledger_target):
    first = ForecastMonitor(target_epoch=6, min_epochs=2, model=constant(0.9), study="s",
                            ledger=ledger_target, run_id="first")
    feed(first, [0.5, 0.6, 0.7, 0.8, 0.85, 0.9])
    first.end()
    second = ForecastMonitor(target_epoch=6, min_epochs=2, model=constant(0.7), study="s",
                             ledger=ledger_target, run_id="second")
    decisions = feed(second, [0.5, 0.55, 0.6])
    second.end()
    assert [d.stop for d in decisions] == [False, True]
    assert "incumbent 0.9" in decisions[-1].reason
    runs = {r.run_id: r for r in second.ledger.records(study="s")}
    assert runs["second"].stopped["epoch"] == 2 and runs["second"].extra["status"] == "stopped"
    assert second.ledger.best_final("s", "val_accuracy", "max") == 0.9
    first.ledger.close()
    second.ledger.close()


# ----------------------------------------------------------------------------- schema
def test_newer_schema_raises_a_typed_error(ledger_path):
    Ledger(ledger_path).close()
    with sqlite3.connect(ledger_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LedgerSchemaError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        Ledger(ledger_path)


def test_not_a_ledger(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a readable ledger"):
        Ledger(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(LedgerError, match="not an earlystop_predict ledger"):
        Ledger(other)
    with pytest.raises(LedgerError, match="no ledger at this path"):
        Ledger(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


# ------------------------------------------------------------------------ concurrency
_WRITER = textwrap.dedent("""
    import sys, time
    from earlystop_predict.ledger import Ledger
    from earlystop_predict.policy.stop import StopPolicy
    from earlystop_predict.forecast.base import Forecast
    from earlystop_predict.records.record import RunRecord
    path, run_id, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    led = Ledger(path)
    led.start_run(RunRecord(run_id, task="t"), study="s", target_epoch=n + 1)
    pol = StopPolicy(threshold=0.1)
    while time.time() < go:
        time.sleep(0.005)
    for e in range(1, n + 1):
        fc = Forecast(0.5, {"0.1": 0.4, "0.5": 0.5, "0.9": 0.6}, "scripted", "", e, n + 1)
        led.log_epoch(run_id, {"epoch": e, "val_accuracy": e / (n + 1)}, pol.decide(fc, epoch=e))
        print(e, flush=True)
    led.finish_run(run_id, final_value=n / (n + 1), final_epoch=n, status="completed")
""")


def _spawn(path, run_id, n, go):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(path), run_id, str(n), str(go)],
                            cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def test_two_processes_writing_one_ledger_lose_nothing(ledger_target):
    Ledger(ledger_target).close()
    go = time.time() + 2.0  # both start writing at the same moment
    procs = [_spawn(ledger_target, f"w{i}", 200, go) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.split()[-1] == "200"
    with Ledger(ledger_target) as led:
        runs = {r.run_id: r for r in led.records()}
    for run_id in ("w0", "w1"):
        rec = runs[run_id]
        assert [r["epoch"] for r in rec.epochs] == list(range(1, 201))
        assert [f["at_epoch"] for f in rec.forecasts] == list(range(1, 201))
        assert rec.extra["status"] == "completed"


def test_kill_9_keeps_every_committed_epoch(ledger_target):
    proc = _spawn(ledger_target, "victim", 100000, 0)
    committed = 0
    try:
        for line in proc.stdout:  # each line is printed after its epoch committed
            committed = int(line)
            if committed >= 40:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 40
    with Ledger(ledger_target) as led:
        [rec] = led.records()
        if led.backend == "sqlite":
            assert led.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = len(rec.epochs)
    assert n >= committed
    assert [r["epoch"] for r in rec.epochs] == list(range(1, n + 1))
    assert len(rec.forecasts) == n
    assert rec.extra["status"] == "running"


# ------------------------------------------------------------------------------- CLI
def test_export_cli_round_trip(ledger_target, tmp_path, capsys):
    with Ledger(ledger_target) as led:
        led.start_run(make_record("a", values=()), study="s", target_epoch=10)
        _log(led, "a", [0.3, 0.4, 0.5])
        led.finish_run("a", final_value=0.5, final_epoch=3, status="stopped",
                       stopped={"epoch": 3, "reason": "poor"})
        led.start_run(make_record("b", values=()), study="t", target_epoch=10)
        _log(led, "b", [0.6], mean=0.9)
        led.start_run(make_record("empty", values=()), study="s", target_epoch=10)
    out = tmp_path / "export" / "runs.jsonl"
    code = main(["ledger", "export", "--ledger", ledger_target, "--format", "jsonl",
                 "--output", str(out)])
    assert code == 0
    assert "exported 2 runs" in capsys.readouterr().err
    recs = {r.run_id: r for r in read_records(out)}
    assert set(recs) == {"a", "b"}
    assert recs["a"].stopped == {"epoch": 3, "reason": "poor"}
    assert [f["at_epoch"] for f in recs["a"].forecasts] == [1, 2, 3]
    assert recs["b"].stopped is None and recs["b"].forecasts[0]["mean"] == 0.9
    assert recs["a"].extra["study"] == "s"
    assert main(["ledger", "export", "--ledger", ledger_target, "--output", str(out),
                 "--study", "t"]) == 0
    assert [r.run_id for r in read_records(out)] == ["b"]
    assert main(["ledger", "list", "--ledger", ledger_target]) == 0
    listing = capsys.readouterr().out
    assert "3 runs" in listing and "@3: poor" in listing


def test_cli_errors_exit_non_zero_with_a_message(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 50)
    out = tmp_path / "o.jsonl"
    res = run_python("import sys; from earlystop_predict.cli import main; "
                     f"sys.exit(main(['ledger', 'export', '--ledger', {str(junk)!r}, "
                     f"'--output', {str(out)!r}]))")
    assert res.returncode == 2
    assert "earlystop-predict ledger: error:" in res.stderr and "not a readable ledger" \
        in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()
    missing = tmp_path / "missing.db"
    res = run_python("import sys; from earlystop_predict.cli import main; "
                     f"sys.exit(main(['report', '--ledger', {str(missing)!r}]))")
    assert res.returncode == 2 and "no ledger at this path" in res.stderr
    assert not missing.exists()


# ------------------------------------------------------------------ read-only readers
def _small_ledger(path) -> str:
    with Ledger(path) as led:
        led.start_run(make_record("r1", []), study="s", target_epoch=10)
        led.log_epoch("r1", {"epoch": 1, "val_accuracy": 0.5})
        led.finish_run("r1", final_value=0.5, final_epoch=1)
    return str(path)


def test_readers_open_the_ledger_read_only_and_write_nothing(tmp_path, capsys):
    import hashlib

    path = _small_ledger(tmp_path / "runs.db")
    before = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert main(["ledger", "list", "--ledger", path]) == 0
    assert main(["ledger", "export", "--ledger", path, "--output", "-"]) == 0
    assert main(["report", "--ledger", path, "--no-plots"]) == 0
    assert "r1" in capsys.readouterr().out
    # no -wal/-shm left beside it, not one byte changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == before
    with Ledger(path, readonly=True) as led:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            led.conn.execute("DELETE FROM runs")
        with pytest.raises(LedgerError, match="read-only"):
            led.finish_run("r1", final_value=0.1)
        assert [r.run_id for r in led.records()] == ["r1"]
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


def test_a_read_only_reader_sees_what_a_live_writer_committed(tmp_path):
    path = _small_ledger(tmp_path / "runs.db")
    with Ledger(path) as writer:  # a training run holds the ledger open (WAL live)
        writer.start_run(make_record("r2", []), study="s")
        writer.log_epoch("r2", {"epoch": 1, "val_accuracy": 0.4})
        with Ledger(path, readonly=True) as reader:
            assert [r.run_id for r in reader.records()] == ["r1", "r2"]
        writer.log_epoch("r2", {"epoch": 2, "val_accuracy": 0.45})
    with Ledger(path, readonly=True) as reader:
        assert reader.records()[1].n_epochs == 2


def _as_other_user(fn):
    """Run ``fn()`` in a forked child under uid/gid 65534 (root ignores file modes);
    its result or its error, as text."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            out = ["ok", fn()]
        except BaseException as exc:  # noqa: BLE001
            out = ["error", f"{type(exc).__name__}: {exc}"]
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_read_only_file_in_a_read_only_folder_can_be_read():
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="esp-ro-")  # under /tmp: reachable by another user
    try:
        path = _small_ledger(os.path.join(folder, "runs.db"))
        os.chmod(path, 0o444)
        os.chmod(folder, 0o555)

        def read() -> list:
            with Ledger(path, readonly=True) as led:
                return [r.run_id for r in led.records()]

        def cli() -> int:
            return main(["ledger", "list", "--ledger", path])

        def write() -> list:
            with Ledger(path) as led:
                led.start_run(make_record("x", []))
            return []

        if os.geteuid() == 0:  # root ignores the modes: read as an ordinary user
            assert _as_other_user(read) == ["ok", ["r1"]]
            assert _as_other_user(cli) == ["ok", 0]
            assert _as_other_user(write)[0] == "error"  # the modes do hold for this user
        else:
            assert read() == ["r1"] and cli() == 0
            with pytest.raises(LedgerError):
                write()
        assert os.listdir(folder) == ["runs.db"]
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


# ---------------------------------------------------------------------- ledger URLs
def test_a_sqlite_url_names_a_file_not_a_folder_called_sqlite(tmp_path, monkeypatch, capsys):
    # Regression: "sqlite:///runs.db" was taken as a relative path, creating "sqlite:/".
    monkeypatch.chdir(tmp_path)
    with Ledger("sqlite:///sub/runs.db") as led:
        assert led.path == "sub/runs.db" and led.backend == "sqlite"
        led.start_run(make_record("a", values=()), study="s", target_epoch=10)
        _log(led, "a", [0.3, 0.4])
        led.finish_run("a", final_value=0.4, final_epoch=2)
    absolute = tmp_path / "abs" / "runs.db"
    mon = ForecastMonitor(target_epoch=10, model=constant(0.5), ledger=f"sqlite:///{absolute}",
                          run_id="m", study="s")  # sqlite:////tmp/.../runs.db
    feed(mon, [0.5, 0.6])
    mon.end()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abs", "sub"]
    assert (tmp_path / "sub" / "runs.db").is_file() and absolute.is_file()
    with Ledger(absolute, readonly=True) as led:
        assert [r.run_id for r in led.records()] == ["m"]
    # the CLI reads the URL too, and refuses to write over the file it names
    assert main(["ledger", "export", "--ledger", "sqlite:///sub/runs.db", "--output", "-"]) == 0
    assert '"run_id":"a"' in capsys.readouterr().out
    before = (tmp_path / "sub" / "runs.db").read_bytes()
    assert main(["ledger", "export", "--ledger", "sqlite:///sub/runs.db",
                 "--output", "sub/runs.db"]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert (tmp_path / "sub" / "runs.db").read_bytes() == before
    assert main(["replay", "sqlite:///sub/runs.db", "--policy", "patience-3",
                 "--single-run", "--target", "2"]) == 0
    assert "1 runs" in capsys.readouterr().out
    assert main(["report", "--ledger", f"sqlite:///{absolute}", "--no-plots"]) == 0
    assert "m" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abs", "sub"]


@pytest.mark.parametrize("url, problem", [
    ("mysql://me@db/esp", "unsupported scheme 'mysql'"),
    ("sqlite://host/runs.db", "has no host"),
    ("sqlite:///runs.db?mode=ro", "no query"),
    ("sqlite:///", "no file named"),
    ("postgresql://me@db:port/esp", "malformed URL"),
    ("postgresql://me@db/esp/extra", "one database name"),
])
def test_a_bad_ledger_url_is_a_typed_error_naming_it(url, problem, tmp_path, monkeypatch):
    from earlystop_predict.errors import ConfigError
    from earlystop_predict.ledger import LedgerURLError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LedgerURLError, match=re.escape(problem)) as err:
        Ledger(url)
    assert isinstance(err.value, ConfigError) and isinstance(err.value, LedgerError)
    assert url.split("?")[0] in str(err.value)
    with pytest.raises(LedgerURLError):  # at construction, not at the first epoch
        ForecastMonitor(target_epoch=10, model=constant(0.5), ledger=url)
    res = run_python("import sys; from earlystop_predict.cli import main; "
                     f"sys.exit(main(['ledger', 'export', '--ledger', {url!r}, "
                     "'--output', 'out.jsonl']))", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "earlystop-predict ledger: error: ledger URL" in res.stderr and problem in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_password_in_a_url_never_reaches_a_message():
    pytest.importorskip("psycopg")
    from earlystop_predict.ledger import parse_target

    url = "postgresql://me:s3cret@127.0.0.1:1/esp"  # nothing listens on port 1
    assert parse_target(url).shown == "postgresql://me:***@127.0.0.1:1/esp"
    with pytest.raises(LedgerError, match="cannot open ledger") as err:
        Ledger(url, timeout=2)
    assert "s3cret" not in str(err.value) and "me:***@127.0.0.1:1/esp" in str(err.value)
    with pytest.raises(LedgerError) as err:
        Ledger("postgres+psycopg://me:s3cret@127.0.0.1:1/esp", timeout=2)
    assert "s3cret" not in str(err.value)


def test_the_core_never_imports_psycopg_and_a_missing_one_names_the_extra(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from earlystop_predict.ledger import Ledger
        from earlystop_predict.policy.monitor import ForecastMonitor
        with Ledger({str(tmp_path / "r.db")!r}) as led:
            led.records()
        ForecastMonitor(target_epoch=5, ledger="postgresql://me@127.0.0.1:1/esp")
        assert "psycopg" not in sys.modules, "psycopg imported"
        sys.modules["psycopg"] = None  # as if not installed
        try:
            Ledger("postgresql://me@127.0.0.1:1/esp")
        except ImportError as exc:
            print(type(exc).__name__, exc)
    """)
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    assert "MissingExtraError" in res.stdout and "earlystop_predict[postgres]" in res.stdout
