"""The ledger on a real PostgreSQL server (started by the ``postgres_server`` fixture; every
test here skips, saying why, where none can start): what only a server ledger has (its
schema marker, a shared database, a lost connection, schemas, fork) and the CLI reading a
``postgresql://`` URL. The behaviours both backends share run in tests/test_ledger.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO_ROOT, make_record

psycopg = pytest.importorskip("psycopg")

from earlystop_predict.cli import main  # noqa: E402
from earlystop_predict.ledger import Ledger, LedgerError, LedgerSchemaError  # noqa: E402
from earlystop_predict.ledger.errors import SCHEMA_VERSION  # noqa: E402
from earlystop_predict.records.record import read_records  # noqa: E402


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema()")}


def _one_run(url: str, run_id: str = "r1", values=(0.5, 0.6)) -> None:
    with Ledger(url) as led:
        led.start_run(make_record(run_id, values=()), study="s", target_epoch=10)
        for e, v in enumerate(values, start=1):
            led.log_epoch(run_id, {"epoch": e, "val_accuracy": v})
        led.finish_run(run_id, final_value=values[-1], final_epoch=len(values))


def test_the_schema_is_marked_and_a_newer_one_is_refused(postgres_url):
    _one_run(postgres_url)
    assert _tables(postgres_url) == {"runs", "epochs", "forecasts", "esp_ledger"}
    with psycopg.connect(postgres_url) as conn:
        marks = dict(conn.execute("SELECT key, value FROM esp_ledger").fetchall())
        assert marks == {"application": "earlystop_predict",
                         "schema_version": str(SCHEMA_VERSION)}
        # floats are double precision: a timestamp keeps its sub-second digits
        kind = conn.execute("SELECT data_type FROM information_schema.columns WHERE "
                            "table_name = 'runs' AND column_name = 'created'").fetchone()[0]
        assert kind == "double precision"
        conn.execute("UPDATE esp_ledger SET value = %s WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    with pytest.raises(LedgerSchemaError, match="is newer than the supported"):
        Ledger(postgres_url, readonly=True)


def test_a_database_of_another_application_is_not_taken_over(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER)")
    with pytest.raises(LedgerError, match="no esp_ledger: not an earlystop_predict ledger"):
        Ledger(postgres_url)
    assert _tables(postgres_url) == {"runs"}


def test_readers_create_nothing_and_cannot_write(postgres_url, capsys):
    with pytest.raises(LedgerError, match="no earlystop_predict ledger there yet"):
        Ledger(postgres_url, readonly=True)
    with pytest.raises(LedgerError, match="create=False"):
        Ledger(postgres_url, create=False)
    assert main(["ledger", "list", "--ledger", postgres_url]) == 2
    assert "no earlystop_predict ledger there yet" in capsys.readouterr().err
    assert _tables(postgres_url) == set()
    _one_run(postgres_url)
    with Ledger(postgres_url, readonly=True) as led:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            led.conn.execute("DELETE FROM runs")
        with pytest.raises(LedgerError, match="read-only"):
            led.finish_run("r1", final_value=0.1)
        assert [r.run_id for r in led.records()] == ["r1"]


def test_a_lost_connection_is_reopened_and_the_write_kept(postgres_url, postgres_server):
    with Ledger(postgres_url) as led:
        led.start_run(make_record("r", values=()), study="s", target_epoch=10)
        led.log_epoch("r", {"epoch": 1, "val_accuracy": 0.5})
        pid = led.conn.info.backend_pid
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        led.log_epoch("r", {"epoch": 2, "val_accuracy": 0.6})  # reconnects, reruns
        assert led.conn.info.backend_pid != pid
        assert [e["epoch"] for e in led.records()[0].epochs] == [1, 2]


def test_schemas_in_one_database_hold_separate_ledgers(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA alpha")
        conn.execute("CREATE SCHEMA beta")
    alpha = postgres_url + "?options=-csearch_path%3Dalpha"
    beta = postgres_url + "?options=-csearch_path%3Dbeta"
    _one_run(alpha, "in-alpha")
    _one_run(beta, "in-beta")
    with Ledger(alpha) as a, Ledger(beta) as b:
        assert [r.run_id for r in a.records()] == ["in-alpha"]
        assert [r.run_id for r in b.records()] == ["in-beta"]
    assert _tables(postgres_url) == set()  # public untouched


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_session_and_leaves_the_parents(postgres_url):
    import gc

    with Ledger(postgres_url) as led:
        led.start_run(make_record("r", values=()), study="s", target_epoch=10)
        led.log_epoch("r", {"epoch": 1, "val_accuracy": 0.5})
        parent_pid = led.conn.info.backend_pid
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                led.log_epoch("r", {"epoch": 2, "val_accuracy": 0.6})
                code = 0 if led.conn.info.backend_pid != parent_pid else 3
                led.close()
                gc.collect()  # the inherited connection is collected here, in the child
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        led.log_epoch("r", {"epoch": 3, "val_accuracy": 0.7})
        assert led.conn.info.backend_pid == parent_pid  # the parent's session survived
        assert [e["epoch"] for e in led.records()[0].epochs] == [1, 2, 3]


_OPENER = textwrap.dedent("""
    import sys, time
    from earlystop_predict.ledger import Ledger
    from earlystop_predict.records.record import RunRecord
    url, run_id, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while time.time() < go:
        time.sleep(0.002)
    with Ledger(url) as led:   # every process creates the schema at the same moment
        led.start_run(RunRecord(run_id, task="t"), study="s", target_epoch=3)
        led.log_epoch(run_id, {"epoch": 1, "val_accuracy": 0.5})
""")


def test_processes_creating_the_schema_at_once_all_succeed(postgres_url):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    go = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, postgres_url, f"p{i}", str(go)],
                              cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Ledger(postgres_url, readonly=True) as led:
        assert sorted(r.run_id for r in led.records()) == ["p0", "p1", "p2", "p3"]


def test_report_replay_and_export_read_a_postgres_ledger(postgres_url, tmp_path, capsys):
    for i, top in enumerate((0.5, 0.7, 0.9)):
        _one_run(postgres_url, f"r{i}", values=[top * k / 6 for k in range(1, 7)])
    out = tmp_path / "runs.jsonl"
    assert main(["ledger", "export", "--ledger", postgres_url, "--output", str(out)]) == 0
    assert [r.run_id for r in read_records(out)] == ["r0", "r1", "r2"]
    assert main(["report", "--ledger", postgres_url, "--no-plots"]) == 0
    assert "r2" in capsys.readouterr().out
    assert main(["replay", postgres_url, "--policy", "patience-3", "--target", "6",
                 "--orders", "2"]) == 0
    assert "3 runs" in capsys.readouterr().out
    with Ledger(postgres_url, readonly=True) as led:
        assert len(led.records()) == 3  # read, nothing changed
