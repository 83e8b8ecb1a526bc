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
    assert a[12].run_id == run_id(list(FAMILIES)[0], 3, 12) == "digits-mlp-s3-00012"
    assert len({s.config.seed for s in a}) == 40
    for spec in a:
        hp, fam = spec.config.hparams, FAMILIES[spec.config.family]
        assert hp["optimizer"] in OPTIMIZERS
        assert 1e-5 <= hp["learning_rate"] <= 3.0
        assert 20 <= spec.config.max_epochs <= 100
        assert fam.num_layers[0] <= hp["num_layers"] <= fam.num_layers[1]
        assert hp["width"] in fam.widths and 0 <= hp["dropout"] <= 0.6
        assert spec.config.framework == (fam.frameworks[0] if len(fam.frameworks) == 1
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
    assert {s.config.framework for s in only_keras
            if len(FAMILIES[s.config.family].frameworks) > 1} == {"keras"}
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



# ----------------------------------------------------------------------------- what users train
NEW_FAMILIES = ("text-hf-steps", "images-cnn", "tabular-large", "keras-mlp", "lightning-sched")


def collect_twice(opts: CollectOptions) -> list:
    """Collect, check every record is valid and kept, collect again: nothing redone."""
    summary = collect(opts)
    assert summary.failed == [] and summary.trained == opts.runs
    corpus = opts.directory / CORPUS_NAME
    before = lines(corpus)
    records = load_corpus(corpus)  # validates every line (RUN_RECORD.md)
    runs = ledger_runs(opts.directory / "ledger.db")
    for rec in records:
        assert rec.metric == "val_accuracy" and rec.mode == "max" and not rec.forecasts
        assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in rec.epochs)
        assert [r["epoch"] for r in rec.epochs] == list(range(1, rec.last_epoch + 1))
        assert set(rec.meta) >= {"train_size", "num_classes", "num_features", "num_params",
                                 "max_epochs", "framework"}
        assert rec.extra["collect"]["family"] == opts.families[0]
        status = rec.extra["collect"]["status"]
        assert runs[rec.run_id]["status"] == status
        assert status == "diverged" or rec.last_epoch == rec.meta["max_epochs"]
    again = collect(opts)
    assert (again.trained, again.skipped) == (0, opts.runs)
    assert lines(corpus) == before
    return records


def test_new_families_draw_inside_their_own_ranges():
    specs = plan(CollectOptions("unused", families=NEW_FAMILIES, runs=200, seed=2,
                                min_epochs=10, max_epochs=60, framework="auto"),
                 available=lambda fw: True)
    seen = {name: set() for name in NEW_FAMILIES}
    for spec in specs:
        cfg, hp = spec.config, spec.config.hparams
        fam = FAMILIES[cfg.family]
        assert fam.epochs[0] <= cfg.max_epochs <= fam.epochs[1]
        assert cfg.framework in fam.frameworks
        if cfg.family == "text-hf-steps":
            assert 1e-5 <= hp["learning_rate"] <= 1e-3 and hp["optimizer"] == "adamw"
            assert hp["lr_schedule"] in ("linear", "cosine", "constant")
            seen[cfg.family].add(hp["arch"])
        elif cfg.family in ("keras-mlp", "lightning-sched"):
            seen[cfg.family].add(hp["scheduler_kind"])
            assert hp["warmup_fraction"] == 0.0 or hp["scheduler_kind"] in (
                "onecycle", "cosine-warmup")
        elif cfg.family == "tabular-large":
            assert 10_000 <= cfg.data["n_samples"] <= 100_000
            assert 10 <= cfg.data["n_classes"] <= 50
        else:
            seen[cfg.family].add(cfg.data["kind"])
    assert seen["text-hf-steps"] == {"bert", "gpt2"}
    assert seen["images-cnn"] == {"digits", "shapes", "textures"}
    assert len(seen["keras-mlp"]) == 5 and len(seen["lightning-sched"]) == 6
    # A pinned scheduler gets its own parameters and canonical schedule.
    (pinned,) = plan(CollectOptions("unused", families=("lightning-sched",), runs=1,
                                    pins={"scheduler_kind": "plateau"}))
    hp = pinned.config.hparams
    assert hp["lr_schedule"] == "other" and {"sched_factor", "sched_patience"} <= set(hp)
    with pytest.raises(ConfigError):
        plan(CollectOptions("unused", families=("keras-mlp",), runs=1,
                            pins={"scheduler_kind": "sometimes"}))


def test_new_data_is_learnable_in_shape():
    from earlystop_predict.tools.collect import userdata

    rng = np.random.default_rng(0)
    base = {"vocab_size": 40, "seq_len": 12, "n_samples": 200, "n_classes": 3, "flip_y": 0.0}
    x, y, k = userdata.texts({**base, "task": "order"}, rng)
    first = np.argmax(x == 2, axis=1) < np.argmax(x == 3, axis=1)
    assert k == 2 and (first == y.astype(bool)).all() and (x[:, 0] == 1).all()
    x, y, k = userdata.texts({**base, "task": "pair"}, rng)
    assert (((x == 2).any(1) ^ (x == 3).any(1)) == y.astype(bool)).all()
    x, y, k = userdata.texts({**base, "task": "count"}, rng)
    a, b = np.isin(x, [4, 5, 6]).sum(1), np.isin(x, [7, 8, 9]).sum(1)
    assert ((a > b) == y.astype(bool)).all()
    x, y, k = userdata.texts({**base, "task": "keywords"}, rng)
    assert k == 3 and set(np.unique(y)) == {0, 1, 2}
    for kind in ("digits", "shapes", "textures"):
        x, y, k = userdata.images({"kind": kind, "side": 16, "n_samples": 60, "n_classes": 4,
                                   "noise": 0.1}, rng)
        assert x.shape[1:] == (16, 16) and x.dtype == np.float32 and y.max() < k
    x, y, k = userdata.tabular({"n_samples": 10_000, "n_features": 20, "n_classes": 30,
                                "informative_fraction": 0.5, "imbalance": 1.5, "flip_y": 0.0,
                                "class_sep": 1.0}, rng)
    counts = np.bincount(y, minlength=30)
    assert k == 30 and x.shape == (10_000, 20) and counts[0] > 5 * counts[-1] > 0


@pytest.mark.parametrize("model", ["bert", "gpt2"])
def test_hf_steps_family_records_one_row_per_evaluation(tmp_path, model):
    pytest.importorskip("transformers")
    opts = small(tmp_path, families=("text-hf-steps",), runs=1, min_epochs=3, max_epochs=3,
                 pins={"model": model, "eval_steps": 4, "n_samples": 300})
    (rec,) = collect_twice(opts)
    assert rec.hparams["arch"] == model and rec.meta["framework"] == "transformers"
    assert rec.meta["eval_steps"] == 4 and rec.meta["max_epochs"] == 3 == rec.last_epoch
    assert [r["step"] for r in rec.epochs] == [4, 8, 12]  # steps mode, not epochs
    assert {"val_accuracy", "val_loss", "train_loss"} <= set(rec.epochs[-1])
    assert rec.hparams["optimizer"] == "adamw" and 1e-5 <= rec.hparams["learning_rate"] <= 1e-3


@pytest.mark.parametrize("framework", ["lightning", "keras"])
def test_images_cnn_family(tmp_path, framework, lightning_ready):
    pytest.importorskip(framework)
    opts = small(tmp_path, families=("images-cnn",), runs=1, framework=framework,
                 min_epochs=2, max_epochs=2,
                 pins={"kind": "shapes", "side": 16, "n_samples": 200, "aug_shift": 2,
                       "aug_flip": True, "aug_noise": 0.1})
    (rec,) = collect_twice(opts)
    assert rec.meta["image_side"] == 16 and rec.meta["num_features"] == 256
    assert rec.hparams["arch"] == "convnet" and rec.meta["framework"] == framework
    assert "train_accuracy" in rec.epochs[-1] and rec.extra["collect"]["data"]["aug_flip"]


def test_torch_augmentation_acts_in_training_only():
    torch = pytest.importorskip("torch")
    from earlystop_predict.tools.collect.families import draw_config, load_data
    from earlystop_predict.tools.collect.train_more import _torch_convnet

    cfg = draw_config("images-cnn", np.random.default_rng(0), min_epochs=2, max_epochs=2,
                      pins={"kind": "textures", "side": 16, "n_samples": 100, "aug_shift": 2,
                            "aug_flip": False, "aug_noise": 0.1})
    data = load_data(cfg)
    augment = _torch_convnet(torch, cfg, data)[0]
    x = torch.from_numpy(data.x_train[:8])
    assert not torch.equal(augment.train()(x), x)
    assert torch.equal(augment.eval()(x), x)


@pytest.mark.parametrize("framework", ["lightning", "keras"])
def test_tabular_large_family_subsamples_each_epoch(tmp_path, framework, lightning_ready):
    pytest.importorskip(framework)
    opts = small(tmp_path, families=("tabular-large",), runs=1, framework=framework,
                 min_epochs=2, max_epochs=2,
                 pins={"n_samples": 10_000, "n_features": 20, "rows_per_epoch": 2048,
                       "batch_size": 1024})
    (rec,) = collect_twice(opts)
    assert rec.meta["train_size"] == 8000 and rec.meta["rows_per_epoch"] == 2048
    assert 10 <= rec.meta["num_classes"] <= 50


def test_keras_random_rows_draw_fresh_rows_each_epoch():
    keras = pytest.importorskip("keras")
    from earlystop_predict.tools.collect.families import Dataset
    from earlystop_predict.tools.collect.train_more import random_rows

    x = np.arange(100, dtype=np.float32)[:, None]
    data = Dataset(x, np.arange(100), x[:5], np.arange(5), 100, 1)
    rows = random_rows(keras, data, 30, 8, seed=0)
    assert len(rows) == 4 and sum(len(rows[i][0]) for i in range(4)) == 30
    first = np.concatenate([rows[i][1] for i in range(4)])
    rows.on_epoch_end()
    second = np.concatenate([rows[i][1] for i in range(4)])
    assert len(set(first)) == 30 and set(first) != set(second)


@pytest.mark.parametrize("kind", ["cosine-warmup", "exponential", "piecewise", "plateau"])
def test_keras_mlp_family_schedules(tmp_path, kind):
    pytest.importorskip("keras")
    opts = small(tmp_path, families=("keras-mlp",), runs=1, min_epochs=3, max_epochs=3,
                 pins={"scheduler_kind": kind, "n_samples": 1000, "batch_size": 256,
                       "warmup_fraction": 0.2})
    (rec,) = collect_twice(opts)
    assert rec.hparams["scheduler_kind"] == kind and rec.meta["framework"] == "keras"
    assert rec.hparams["lr_schedule"] == {"constant": "constant", "cosine-warmup": "cosine",
                                          "plateau": "other"}.get(kind, "step")
    assert (rec.hparams["warmup_fraction"] > 0) == (kind == "cosine-warmup")


@pytest.mark.parametrize("kind", ["onecycle", "plateau", "cosine-annealing",
                                  "cosine-restarts", "exponential", "multistep"])
def test_lightning_sched_family_schedulers(tmp_path, kind, lightning_ready):
    opts = small(tmp_path, families=("lightning-sched",), runs=1, min_epochs=3, max_epochs=3,
                 pins={"scheduler_kind": kind, "n_samples": 1000, "batch_size": 256,
                       "optimizer": "adam", "learning_rate": 1e-3})
    (rec,) = collect_twice(opts)
    assert rec.hparams["scheduler_kind"] == kind and rec.meta["framework"] == "lightning"
    assert rec.extra["collect"]["status"] == "completed"
