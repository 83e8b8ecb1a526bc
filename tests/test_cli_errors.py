"""The CLI tried as an adversarial user would (issue 12, items 5, 7, 9 and 10): outputs
that are inputs, links, devices, FIFOs or folders; input that is not UTF-8, nested too
deeply, or holds a 5000-digit integer; a tampered ledger; gzip input; bad settings in a
batch. Every case ends with exit status 2 and a message, destroys nothing, and prints
no traceback."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from earlystop_predict.cli import main
from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.ledger import Ledger
from earlystop_predict.records.record import RunRecord


def _run(rid: str, n: int = 6, **extra) -> dict:
    return {"run_id": rid, "task": "t", "metric": "val_accuracy",
            "hparams": {"learning_rate": 0.01}, "meta": {"max_epochs": 30},
            "epochs": [{"epoch": e, "val_accuracy": round(0.3 + 0.02 * e, 3)}
                       for e in range(1, n + 1)], **extra}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ledger(path: Path, runs: int = 2) -> Path:
    with Ledger(path) as led:
        for i in range(runs):
            rec = RunRecord(f"r{i}", hparams={"learning_rate": 0.01})
            led.start_run(rec, study="s", target_epoch=10)
            for e in range(1, 4):
                led.log_epoch(rec.run_id, {"epoch": e, "val_accuracy": 0.1 * e})
            led.finish_run(rec.run_id, final_value=0.3, final_epoch=3)
    return path


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


# ------------------------------------------------------------------ output paths
def test_ledger_export_onto_the_ledger_itself_is_refused(tmp_path, capsys) -> None:
    db = _ledger(tmp_path / "runs.db")
    before = db.read_bytes()
    for out in (str(db), str(tmp_path / "." / "runs.db")):
        rc, err = _cli(capsys, "ledger", "export", "--ledger", str(db), "--output", out)
        assert rc == 2 and "is the input --ledger" in err
    assert db.read_bytes() == before
    with Ledger(db, readonly=True) as led:
        assert len(led.records()) == 2


def test_forecast_onto_its_input_is_refused_by_any_path(tmp_path, capsys) -> None:
    runs = _jsonl(tmp_path / "runs.jsonl", [_run("a")])
    before = runs.read_text()
    (tmp_path / "alias.jsonl").symlink_to(runs)
    os.link(runs, tmp_path / "hard.jsonl")
    for out in (runs, tmp_path / "alias.jsonl", tmp_path / "hard.jsonl"):
        rc, err = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", str(out))
        assert rc == 2 and "is the input RUNS" in err
    assert runs.read_text() == before and (tmp_path / "alias.jsonl").is_symlink()


def test_rank_onto_its_candidates_is_refused(tmp_path, capsys) -> None:
    cands = _jsonl(tmp_path / "c.jsonl", [{"hparams": {"learning_rate": 0.1}}])
    before = cands.read_text()
    rc, err = _cli(capsys, "rank", str(cands), "--target", "30", "--output", str(cands))
    assert rc == 2 and "is the input CANDIDATES" in err and cands.read_text() == before


def test_a_symlink_output_is_written_through(tmp_path, capsys) -> None:
    runs = _jsonl(tmp_path / "runs.jsonl", [_run("a")])
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    rc, _ = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", str(link))
    assert rc == 0 and link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text().splitlines()[0])["run_id"] == "a"


def test_a_fifo_a_device_and_a_folder_are_never_replaced(tmp_path, capsys) -> None:
    runs = _jsonl(tmp_path / "runs.jsonl", [_run("a")])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    targets = [(fifo, stat.S_ISFIFO, "FIFO"), (tmp_path, stat.S_ISDIR, "directory"),
               (Path("."), stat.S_ISDIR, "directory")]
    dev = tmp_path / "null"
    try:  # our own device node (never the machine's /dev/null)
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets.append((dev, stat.S_ISCHR, "device"))
    except (PermissionError, OSError):
        pass
    for path, kind, word in targets:
        for argv in (["forecast", str(runs), "--target", "30"],
                     ["ledger", "export", "--ledger", str(_ledger(tmp_path / "l.db"))]):
            rc, err = _cli(capsys, *argv, "--output", str(path))
            assert rc == 2 and word in err, (path, err)
            assert kind(os.lstat(path).st_mode)
    assert not list(tmp_path.glob(".*.jsonl.*")) and not list(tmp_path.glob(".fifo.*"))


def test_folder_outputs_refuse_a_file_and_the_base_model(tmp_path, capsys) -> None:
    runs = _jsonl(tmp_path / "runs.jsonl", [_run("a")])
    other = _jsonl(tmp_path / "other.jsonl", [_run("b")])
    rc, err = _cli(capsys, "report", "--runs", str(runs), "--output-dir", str(other))
    assert rc == 2 and "a folder" in err and other.read_text().startswith("{")
    rc, err = _cli(capsys, "report", "--runs", str(runs), "--output-dir", str(runs))
    assert rc == 2 and "is the input --runs" in err
    rc, err = _cli(capsys, "train", "--from", str(runs), "--output", str(runs))
    assert rc == 2 and "is the input --from" in err
    base = tmp_path / "model"
    base.mkdir()
    rc, err = _cli(capsys, "train", "--from", str(runs), "--base", str(base),
                   "--output", str(base))
    assert rc == 2 and "is the input --base" in err
    rc, err = _cli(capsys, "collect", "--output", str(runs), "--runs", "1")
    assert rc == 2 and "a folder" in err


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path) -> None:
    from earlystop_predict.records.record import write_jsonl

    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def rows():
        yield {"a": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(out, rows())
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# ------------------------------------------------------------------ no tracebacks
@pytest.mark.parametrize(("content", "needle"), [
    (b'{"run_id": "caf\xe9", "epochs": []}\n', "not UTF-8"),
    (bytes(range(256)) * 4, "not UTF-8"),
    (b"[" * 100_000 + b"\n", "nested too deeply"),
    (b'{"run_id": "a", "epochs": [{"epoch": 1, "val_accuracy": ' + b"9" * 5000 + b"}]}\n",
     "4300"),
])
@pytest.mark.parametrize("command", ["forecast", "replay"])
def test_unreadable_input_exits_2_naming_file_and_line(tmp_path, capsys, content, needle,
                                                      command) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_bytes(b'{"run_id": "ok", "epochs": [{"epoch": 1, "val_accuracy": 0.5}]}\n'
                     + content)
    out = tmp_path / "out.jsonl"
    argv = ["forecast", str(path), "--target", "30", "--output", str(out)] \
        if command == "forecast" else ["replay", str(path), "--policy", "none"]
    rc, err = _cli(capsys, *argv)
    assert rc == 2 and needle in err and f"{path}, line 2" in err
    assert not out.exists()


def test_a_tampered_json_cell_in_the_ledger_names_the_run(tmp_path, capsys) -> None:
    db = _ledger(tmp_path / "runs.db")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE epochs SET data = '{\"epoch\": 2, oops' WHERE run_id = 'r1' "
                     "AND epoch = 2")
    rc, err = _cli(capsys, "ledger", "export", "--ledger", str(db), "--output", "-")
    assert rc == 2 and "epochs row of run 'r1'" in err and "not valid JSON" in err
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET hparams = '[1, 2]' WHERE run_id = 'r0'")
        conn.execute("UPDATE epochs SET data = '{}' WHERE run_id = 'r1'")
    rc, err = _cli(capsys, "report", "--ledger", str(db), "--no-plots")
    assert rc == 2 and "run 'r0', column 'hparams'" in err


def test_gzip_input_is_read_by_forecast_and_replay(tmp_path, capsys) -> None:
    path = tmp_path / "runs.jsonl.gz"
    rows = [_run(f"r{i}", n=30) for i in range(4)]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    out = tmp_path / "fc.jsonl"
    rc, _ = _cli(capsys, "forecast", str(path), "--target", "40", "--output", str(out),
                 "--observed", "5")
    assert rc == 0 and len(out.read_text().splitlines()) == 4
    rc = main(["replay", str(path), "--policy", "none", "--orders", "2", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["info"]["runs"] == 4


def test_an_internal_error_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch) -> None:
    import earlystop_predict.forecast.compose as compose

    def broken(kind):
        raise TypeError("a bug")

    monkeypatch.setattr(compose, "load_model", broken)
    runs = _jsonl(tmp_path / "runs.jsonl", [_run("a")])
    rc, err = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", "-")
    assert rc == 1 and "internal error: TypeError: a bug" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------ bad runs in a batch
@pytest.mark.parametrize(("setting", "field"), [
    ({"hparams": {"learning_rate": "fast"}}, "hparams.learning_rate"),
    ({"hparams": {"weight_decay": -1e308}}, "hparams.weight_decay"),
    ({"meta": {"max_epochs": "fifty"}}, "meta.max_epochs"),
    ({"meta": {"train_size": 1e300}}, "meta.train_size"),
    ({"hparams": {"optimizer": 3}}, "hparams.optimizer"),
])
def test_a_bad_setting_is_refused_and_skip_invalid_forecasts_the_others(
        tmp_path, capsys, setting, field) -> None:
    runs = _jsonl(tmp_path / "runs.jsonl", [_run("good"), {**_run("bad"), **setting}])
    out = tmp_path / "out.jsonl"
    rc, err = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", str(out))
    assert rc == 2 and f"line 2, field '{field}'" in err and "--skip-invalid" in err
    assert not out.exists()
    rc, err = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", str(out),
                   "--skip-invalid")
    assert rc == 0 and "skipped" in err and field in err
    assert [json.loads(x)["run_id"] for x in out.read_text().splitlines()] == ["good"]


def test_a_run_the_model_refuses_is_named_with_its_line(tmp_path, capsys, monkeypatch) -> None:
    import earlystop_predict.forecast.compose as compose

    def fn(rec, target):
        if rec.run_id == "bad":
            raise ValueError("cannot serve this run")
        return 0.5

    monkeypatch.setattr(compose, "load_model", lambda kind: ScriptedForecaster(fn))
    runs = _jsonl(tmp_path / "runs.jsonl", [_run("a"), _run("bad"), _run("c")])
    out = tmp_path / "out.jsonl"
    rc, err = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", str(out))
    assert rc == 2 and "line 2" in err and "run 'bad'" in err and "cannot serve" in err
    assert not out.exists()
    rc, err = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", str(out),
                   "--skip-invalid")
    assert rc == 0 and [json.loads(x)["run_id"] for x in out.read_text().splitlines()] == \
        ["a", "c"]


def test_an_empty_input_exits_0_and_says_so(tmp_path, capsys) -> None:
    runs = tmp_path / "empty.jsonl"
    runs.write_text("\n")
    out = tmp_path / "out.jsonl"
    rc, err = _cli(capsys, "forecast", str(runs), "--target", "30", "--output", str(out))
    assert rc == 0 and "holds no run records" in err and out.read_text() == ""


def test_a_ledger_given_where_jsonl_belongs_says_how_to_export_it(tmp_path, capsys) -> None:
    db = _ledger(tmp_path / "runs.db")
    rc, err = _cli(capsys, "forecast", str(db), "--target", "30", "--output", "-")
    assert rc == 2 and "an SQLite file" in err and "ledger export" in err


@pytest.mark.parametrize(("sql", "skipped"), [
    # the epoch key column is the epoch: a damaged copy of it in the row is repaired
    ("UPDATE epochs SET data = '{\"epoch\": \"x\", \"val_accuracy\": 0.2}' WHERE "
     "run_id = 'r0' AND epoch = 2", False),
    ("UPDATE epochs SET data = '{\"val_accuracy\": 0.2}' WHERE run_id = 'r0' AND epoch = 2",
     False),
    ("UPDATE epochs SET data = '{\"epoch\": 2, \"val_accuracy\": \"high\"}' WHERE "
     "run_id = 'r0' AND epoch = 2", True),
    ("UPDATE runs SET final_value = 'abc', target_epoch = 'x' WHERE run_id = 'r0'", False),
    ("UPDATE runs SET mode = 'sideways' WHERE run_id = 'r0'", True),
])
def test_a_ledger_changed_by_hand_is_read_without_an_internal_error(tmp_path, capsys,
                                                                    sql, skipped) -> None:
    db = _ledger(tmp_path / "runs.db")
    with sqlite3.connect(db) as conn:
        conn.execute(sql)
    for argv in (["ledger", "list", "--ledger", str(db)],
                 ["ledger", "export", "--ledger", str(db), "--output", "-"],
                 ["report", "--ledger", str(db), "--no-plots"]):
        rc, err = _cli(capsys, *argv)
        assert rc in (0, 2), (argv, err)
    rc, err = _cli(capsys, "report", "--ledger", str(db), "--no-plots")
    assert rc == 0 and ("skipped" in err and "run 'r0'" in err) == skipped, err
