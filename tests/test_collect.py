"""``earlystop-predict collect``: real tiny training runs, resume, divergence, corpus I/O.

Runs are tiny (wine / breast-cancer MLPs, 3-4 epochs, one process) so the file
stays fast; the frameworks are the real ones, nothing is mocked.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from earlystop_predict.cli import main
from earlystop_predict.errors import ConfigError, RecordError
from earlystop_predict.ledger import Ledger
from earlystop_predict.records.corpus import (
    CORPUS_NAME,
    append_record,
    iter_corpus,
    load_corpus,
    repair_corpus,
)
from earlystop_predict.tools.collect.families import FAMILIES, OPTIMIZERS, draw_config, lr_factor
from earlystop_predict.tools.collect.run import CollectOptions, collect, plan, run_id

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.filterwarnings("ignore:.*does not have many workers"),
              pytest.mark.filterwarnings("ignore:.*treespec, LeafSpec"),
              pytest.mark.filterwarnings("ignore:.*the logging interval")]


def small(tmp_path: Path, **kw) -> CollectOptions:
    kw.setdefault("families", ("wine", "breast-cancer"))
    kw.setdefault("runs", 3)
    kw.setdefault("workers", 1)
    kw.setdefault("framework", "lightning")
    kw.setdefault("min_epochs", 3)
    kw.setdefault("max_epochs", 4)
    kw.setdefault("progress", False)
    return CollectOptions(tmp_path / "corpus", **kw)


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line for line in fh.read().splitlines() if line]


def ledger_runs(path: Path) -> dict[str, dict]:
    with Ledger(path, create=False) as led:
        return {r["run_id"]: r for r in led.runs()}


# ----------------------------------------------------------------------------- no training
def test_plan_is_deterministic_and_inside_the_declared_ranges():
    opts = CollectOptions("unused", runs=40, seed=3, framework="keras", progress=False)
    a, b = plan(opts), plan(opts)
    assert [(s.run_id, s.config.to_dict()) for s in a] == \
        [(s.run_id, s.config.to_dict()) for s in b]
    assert a[7].run_id == run_id(list(FAMILIES)[0], 3, 7) == "digits-mlp-s3-00007"
    assert len({s.config.seed for s in a}) == 40
    for spec in a:
        hp, fam = spec.config.hparams, FAMILIES[spec.config.family]
        assert hp["optimizer"] in OPTIMIZERS
        assert 1e-5 <= hp["learning_rate"] <= 3.0
        assert 20 <= spec.config.max_epochs <= 100
        assert fam.num_layers[0] <= hp["num_layers"] <= fam.num_layers[1]
        assert hp["width"] in fam.widths and 0 <= hp["dropout"] <= 0.6
        assert spec.config.framework == ("transformers" if spec.config.family == "text-hf"
                                         else "keras")
    # More runs later: the first ones stay the same runs.
    longer = plan(CollectOptions("unused", runs=45, seed=3, framework="keras"))
    assert [s.run_id for s in longer[:40]] == [s.run_id for s in a]
    assert longer[39].config == a[39].config
    # Pins replace drawn values and change the ids.
    pinned = plan(CollectOptions("unused", runs=2, seed=3, pins={"learning_rate": "10",
                                                                 "max_epochs": 7}))
    assert all(s.config.hparams["learning_rate"] == 10.0 for s in pinned)
    assert all(s.config.max_epochs == 7 for s in pinned)
    assert pinned[0].run_id.startswith("digits-mlp-s3-00000-p")


def test_auto_framework_uses_what_is_installed():
    only_keras = plan(CollectOptions("unused", runs=12, framework="auto"),
                      available=lambda fw: fw == "keras")
    assert {s.config.framework for s in only_keras if s.config.family != "text-hf"} == {"keras"}
    both = plan(CollectOptions("unused", runs=60, framework="auto"), available=lambda fw: True)
    assert {s.config.framework for s in both} == {"lightning", "keras", "transformers"}


@pytest.mark.parametrize("kw, arg", [
    ({"families": ("nope",)}, "family"), ({"runs": 0}, "runs"),
    ({"min_epochs": 1}, "min_epochs"), ({"min_epochs": 30, "max_epochs": 20}, "max_epochs"),
    ({"framework": "jax"}, "framework"), ({"workers": 0}, "workers"),
    ({"pins": {"colour": "red"}}, "--set key")])
def test_bad_options_name_the_argument(kw, arg):
    with pytest.raises(ConfigError) as err:
        plan(CollectOptions("unused", **kw))
    assert err.value.arg == arg


def test_lr_schedules():
    assert lr_factor(0, 100, "constant", 0.0) == 1.0
    assert lr_factor(9, 100, "cosine", 0.1) == 1.0  # end of warm-up
    assert lr_factor(0, 100, "linear", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_factor(99, 100, "linear", 0.0) == pytest.approx(0.01)
    assert [lr_factor(s, 100, "step", 0.0) for s in (49, 50, 75)] == \
        pytest.approx([1.0, 0.1, 0.01])


def test_every_family_loads_its_data():
    from earlystop_predict.tools.collect.families import load_data

    for name in FAMILIES:
        cfg = draw_config(name, np.random.default_rng(1), min_epochs=3, max_epochs=4, seed=1)
        data = load_data(cfg)
        assert data.train_size == len(data.x_train) >= 8 and len(data.y_val) > 0
        assert data.y_train.max() < data.num_classes and np.isfinite(data.x_train).all()
        assert cfg.hparams["batch_size"] <= data.train_size


def test_corpus_survives_a_torn_append(tmp_path, record, capsys):
    path = tmp_path / CORPUS_NAME
    for i in range(2):
        append_record(path, {**record.to_dict(), "run_id": f"r{i}"})
    whole = path.read_bytes()
    member = gzip.compress(json.dumps({**record.to_dict(), "run_id": "r2"}).encode() + b"\n")
    path.write_bytes(whole + member[: len(member) // 2])  # killed while appending
    assert [r.run_id for r in iter_corpus(path)] == ["r0", "r1"]
    assert "torn" in capsys.readouterr().err
    assert repair_corpus(path) == len(member) // 2
    assert path.read_bytes() == whole
    append_record(path, {**record.to_dict(), "run_id": "r2"})
    assert [r.run_id for r in load_corpus(path)] == ["r0", "r1", "r2"]
    assert repair_corpus(path) == 0
    path.write_bytes(whole + gzip.compress(b'{"run_id": "bad", "epochs": [{"epoch": 0}]}\n'))
    with pytest.raises(RecordError, match="line 3"):
        load_corpus(path)


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def lightning_ready():
    pytest.importorskip("lightning.pytorch")
    pytest.importorskip("sklearn")


def test_collect_writes_valid_records_ledger_and_datasheet(tmp_path, lightning_ready):
    opts = small(tmp_path)
    summary = collect(opts)
    assert (summary.trained, summary.skipped, summary.failed) == (3, 0, [])
    records = load_corpus(opts.directory / CORPUS_NAME)
    assert [r.run_id for r in records] == ["wine-s0-00000", "breast-cancer-s0-00001",
                                           "wine-s0-00002"]
    runs = ledger_runs(opts.directory / "ledger.db")
    for rec in records:
        assert rec.metric == "val_accuracy" and rec.mode == "max"
        status = rec.extra["collect"]["status"]
        if status == "completed":  # the draw may hold a diverging one (sgd, lr up to 3)
            assert rec.stopped is None and rec.last_epoch == rec.meta["max_epochs"] in (3, 4)
        else:
            assert rec.stopped == {"epoch": rec.last_epoch, "reason": "diverged"}
        assert {"val_accuracy", "val_loss", "train_loss", "train_accuracy"} <= set(rec.epochs[0])
        assert 0.0 <= rec.final_value() <= 1.0
        assert set(rec.hparams) >= {"learning_rate", "batch_size", "optimizer", "momentum",
                                    "weight_decay", "dropout", "num_layers", "width",
                                    "lr_schedule", "warmup_fraction"}
        assert set(rec.meta) >= {"train_size", "num_classes", "num_features", "num_params",
                                 "max_epochs", "framework"}
        assert rec.meta["framework"] == "lightning" and not rec.forecasts
        led = runs[rec.run_id]
        assert (led["status"], led["n_epochs"]) == (status, rec.last_epoch)
        assert led["final_value"] == pytest.approx(rec.final_value())
    sheet = (opts.directory / "DATASHEET.md").read_text()
    assert "| wine | sklearn-wine | mlp | lightning/keras | 2 |" in sheet
    assert opts.command() in sheet and "--runs 3" in opts.command()

    # More runs, same search: the finished ones are neither redone nor changed.
    before = lines(opts.directory / CORPUS_NAME)
    created = {k: v["created"] for k, v in runs.items()}
    assert main(["collect", "--output", str(opts.directory), "--families",
                 "wine,breast-cancer", "--runs", "5", "--framework", "lightning",
                 "--min-epochs", "3", "--max-epochs", "4", "--workers", "1", "-q"]) == 0
    after = lines(opts.directory / CORPUS_NAME)
    assert after[:3] == before and len(after) == 5
    runs = ledger_runs(opts.directory / "ledger.db")
    assert {k: runs[k]["created"] for k in created} == created and len(runs) == 5
    assert "5 runs (" in (opts.directory / "DATASHEET.md").read_text()


def test_diverging_run_is_kept_and_marked(tmp_path, lightning_ready):
    opts = small(tmp_path, families=("wine",), runs=1, min_epochs=4, max_epochs=4,
                 pins={"learning_rate": 1e6, "optimizer": "sgd", "momentum": 0.9})
    summary = collect(opts)
    assert (summary.trained, summary.diverged) == (1, 1)
    (rec,) = load_corpus(opts.directory / CORPUS_NAME)
    assert rec.hparams["learning_rate"] == 1e6 and rec.hparams["optimizer"] == "sgd"
    assert rec.extra["collect"]["status"] == "diverged"
    assert rec.stopped == {"epoch": rec.last_epoch, "reason": "diverged"}
    assert rec.last_epoch < 4  # stopped at the NaN, not trained on
    assert rec.epochs[-1]["train_loss"] is None or rec.epochs[-1]["val_loss"] is None
    led = ledger_runs(opts.directory / "ledger.db")[rec.run_id]
    assert led["status"] == "diverged" and led["stopped"]["reason"] == "diverged"
    assert "1 runs (1 diverged)" in (opts.directory / "DATASHEET.md").read_text()


def _collect_until_a_run_finishes(out: Path, runs: int, epochs: int) -> subprocess.Popen:
    """``earlystop-predict collect`` with two spawned workers in a session of its own,
    returned once the first run is in the corpus (or it ended, or 120 s passed)."""
    args = ["collect", "--output", str(out), "--families", "wine", "--runs", str(runs),
            "--framework", "lightning", "--min-epochs", str(epochs), "--max-epochs",
            str(epochs), "--workers", "2", "-q"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([sys.executable, "-m", "earlystop_predict.cli", *args],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    corpus = out / CORPUS_NAME
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if corpus.exists() and lines(corpus):
                break
            time.sleep(0.02)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc


def test_killed_parallel_collection_resumes_without_redoing_or_losing_runs(
        tmp_path, lightning_ready):
    """Two spawned workers, the whole process tree SIGKILLed mid-collection, a restart."""
    out = tmp_path / "corpus"
    corpus = out / CORPUS_NAME
    proc = _collect_until_a_run_finishes(out, runs=4, epochs=25)
    os.killpg(proc.pid, signal.SIGKILL)  # parent and workers: no clean-up of any kind
    proc.wait(timeout=30)
    first = lines(corpus)
    assert 1 <= len(first) < 4, "the kill should land before the collection ends"
    running = [k for k, v in ledger_runs(out / "ledger.db").items() if v["status"] == "running"]
    summary = collect(small(tmp_path, families=("wine",), runs=4, min_epochs=25,
                            max_epochs=25))
    assert summary.skipped == len(first) and summary.trained == 4 - len(first)
    final = lines(corpus)
    assert final[: len(first)] == first and len(final) == 4
    ids = [json.loads(x)["run_id"] for x in final]
    assert sorted(ids) == [f"wine-s0-0000{i}" for i in range(4)]
    runs = ledger_runs(out / "ledger.db")
    for rid in ids:  # an interrupted run was redone from scratch: 25 epochs, once each
        assert runs[rid]["status"] in ("completed", "diverged")
        assert runs[rid]["n_epochs"] == 25 or runs[rid]["status"] == "diverged"
    assert set(running) <= set(ids[len(first):])
    records = load_corpus(corpus)
    for rec in records:
        assert [r["epoch"] for r in rec.epochs] == list(range(1, rec.last_epoch + 1))
        assert rec.last_epoch == 25 or rec.extra["collect"]["status"] == "diverged"
    # The same search in this process gives the same curves: runs are seeded by index.
    serial = small(tmp_path / "serial", families=("wine",), runs=4, min_epochs=25,
                   max_epochs=25)
    collect(serial)
    by_id = {r.run_id: r for r in load_corpus(serial.directory / CORPUS_NAME)}
    for rec in records:
        assert rec.series("val_loss") == pytest.approx(by_id[rec.run_id].series("val_loss"),
                                                       rel=1e-4, nan_ok=True)


def test_sigterm_stops_the_workers_and_keeps_finished_runs(tmp_path, lightning_ready):
    """``kill PARENT`` (SIGTERM, the parent only): the workers it spawned stop too,
    the exit status says so, and what finished is in the corpus."""
    out = tmp_path / "corpus"
    corpus = out / CORPUS_NAME
    proc = _collect_until_a_run_finishes(out, runs=6, epochs=40)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 128 + signal.SIGTERM  # a hang guard only
        deadline = time.monotonic() + 30
        survivors = True
        while survivors and time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)  # anyone left in the collector's process group?
                time.sleep(0.1)
            except ProcessLookupError:
                survivors = False
        assert not survivors, "spawned workers outlived their parent"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finished = lines(corpus)
    assert 1 <= len(finished) < 6
    for rec in load_corpus(corpus):
        assert rec.last_epoch == 40 or rec.extra["collect"]["status"] == "diverged"


def test_keras_and_hf_runs(tmp_path, lightning_ready):
    pytest.importorskip("keras")
    pytest.importorskip("transformers")
    opts = small(tmp_path, families=("digits-cnn", "text-hf"), runs=2, framework="keras",
                 min_epochs=2, max_epochs=2)
    summary = collect(opts)
    assert summary.failed == [] and summary.trained == 2
    cnn, text = load_corpus(opts.directory / CORPUS_NAME)
    assert cnn.meta["framework"] == "keras" and cnn.meta["num_features"] == 64
    assert cnn.hparams["arch"] == "cnn" and cnn.last_epoch == 2
    assert text.meta["framework"] == "transformers" and text.last_epoch == 2
    assert {"val_accuracy", "val_loss", "train_loss"} <= set(text.epochs[-1])
    assert all(math.isfinite(r["val_accuracy"]) for r in text.epochs)
    runs = ledger_runs(opts.directory / "ledger.db")
    assert {r["status"] for r in runs.values()} == {"completed"}

