"""The training pipeline end to end on tiny synthetic corpora (never the bundled models):
bundle training with real runs split by family, fine-tuning with --from, and rank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.cli import main  # noqa: E402
from earlystop_predict.errors import ConfigError, RecordError  # noqa: E402
from earlystop_predict.forecast.compose import BlendForecaster  # noqa: E402
from earlystop_predict.forecast.lgbm import HistoryForecaster  # noqa: E402
from earlystop_predict.forecast.prior import load_prior, rank  # noqa: E402
from earlystop_predict.records.record import RunRecord, write_records  # noqa: E402
from earlystop_predict.training.lcbench import TEST_TASKS, VAL_TASKS  # noqa: E402
from earlystop_predict.training.real import RealCurves, family_of  # noqa: E402

HP_NAMES = ["learning_rate", "batch_size", "momentum", "weight_decay", "num_layers", "width",
            "dropout"]


def _curve(rng: np.random.Generator, n: int, lr: float, noise: float = 0.0) -> np.ndarray:
    top = 0.95 - 0.3 * abs(np.log10(lr) + 2) / 2 + rng.normal(0, 0.02)
    e = np.arange(1, n + 1)
    acc = top - (top - 0.1) * e ** (-0.6 - rng.uniform(0, 0.4))
    return np.clip(acc + rng.normal(0, noise, n), 0, 1)


@pytest.fixture(scope="module")
def lcbench_npz(tmp_path_factory) -> str:
    """A tiny stand-in for the shared corpus: the real task ids, 16 curves each."""
    rng = np.random.default_rng(0)
    tasks = list(TEST_TASKS) + list(VAL_TASKS) + [1, 2, 3, 4]
    tid, hps, curves = [], [], []
    for t in tasks:
        for _ in range(16):
            lr = 10 ** rng.uniform(-4, 0)
            hp = [lr, 64, 0.9, 1e-4, 2, 128, 0.1]
            acc = _curve(rng, 52, lr)
            loss = -np.log(np.clip(acc, 0.05, 1))
            tid.append(t)
            hps.append(hp)
            curves.append(np.stack([acc, loss, acc, loss], axis=1))
    path = tmp_path_factory.mktemp("lcb") / "train.npz"
    np.savez(path, task_id=np.array(tid), hparam_names=np.array(HP_NAMES),
             hparams=np.array(hps), curves=np.array(curves, dtype=np.float32),
             metric_names=np.array(["val_accuracy", "val_loss", "train_accuracy",
                                    "train_loss"]))
    return str(path)


def _runs(family: str, n: int, seed: int, lr_shift: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lr = 10 ** rng.uniform(-4, 0)
        T = int(rng.integers(20, 41))
        acc = _curve(rng, T, lr * 10 ** lr_shift, noise=0.01)
        epochs = [{"epoch": e + 1, "val_accuracy": float(acc[e]),
                   "val_loss": float(-np.log(max(acc[e], 0.05))),
                   "train_accuracy": float(min(1.0, acc[e] + 0.02))} for e in range(T)]
        out.append({"run_id": f"{family}-{i}", "task": family, "metric": "val_accuracy",
                    "hparams": {"learning_rate": lr, "optimizer": "adam", "batch_size": 32},
                    "meta": {"max_epochs": T, "train_size": 500},
                    "epochs": epochs, "collect": {"family": family, "status": "completed"}})
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    rows = (_runs("fam-a", 30, 1) + _runs("fam-b", 30, 2) + _runs("digits-cnn", 20, 3)
            + _runs("sequence-gru", 20, 4))
    path = tmp_path_factory.mktemp("corpus") / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, lcbench_npz, corpus) -> str:
    out = tmp_path_factory.mktemp("model")
    rc = main(["train", "--output", str(out), "--lcbench", lcbench_npz, "--corpus", corpus,
               "--lstm-epochs", "2", "--lgbm-draws", "1", "--threads", "1"])
    assert rc == 0
    return str(out)


def test_real_curves_keep_every_metric_and_the_family(corpus) -> None:
    from earlystop_predict.training.real import read_runs

    records = read_runs(corpus)
    curves = RealCurves.from_records(records)
    assert family_of(records[0]) == "fam-a"
    assert curves.group[0] == "fam-a"
    n = records[0].n_epochs
    assert np.isfinite(curves.acc[0, :n]).all() and np.isnan(curves.acc[0, n:]).all()
    assert np.isfinite(curves.train_acc[0, :n]).all()
    assert np.isnan(curves.train_loss[0]).all()  # not logged: missing, not zero
    assert curves.horizon[0] == records[0].meta["max_epochs"]


def _served(bundle) -> str:
    """What the tiny bundle (or a directory fine-tuned from it) serves: the ensemble,
    or the LSTM alone where its validation tasks chose a share of 1."""
    w = json.loads((Path(bundle) / "manifest.json").read_text())["ensemble"]["lstm_weight"]
    return "lstm" if w == 1.0 else "lstm+lightgbm"


def test_bundle_cross_validates_whole_families_and_writes_a_model_card(bundle) -> None:
    from pathlib import Path

    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {"lstm", "lightgbm", "prior"}
    real = manifest["training_data"]["real"]
    assert real["families"] == ["digits-cnn", "fam-a", "fam-b", "sequence-gru"]
    # Only the listed families that the corpus holds make folds; the others always train.
    assert manifest["folds"] == [{"dir": "folds/fold1", "families": ["sequence-gru"]},
                                 {"dir": "folds/fold2", "families": ["digits-cnn"]}]
    for fold in manifest["folds"]:
        fold_manifest = json.loads((Path(bundle) / fold["dir"] / "manifest.json").read_text())
        assert fold_manifest["training_data"]["real"]["held_out_families"] == fold["families"]
        served = "lstm" if fold_manifest["ensemble"]["lstm_weight"] == 1.0 else "lstm+lightgbm"
        assert load_model(Path(bundle) / fold["dir"]).forecast(
            RunRecord.from_dict(_runs("x", 1, 9)[0]).truncated(5), 30).model == served
    cv = manifest["held_out_families"]
    assert set(cv) == {"sequence-gru", "digits-cnn", "all"}
    assert cv["sequence-gru"]["runs"] == 20 and cv["all"]["runs"] == 40
    row = cv["all"]["20%"]
    assert set(row) == {"ensemble", "lstm", "lightgbm", "last_value"}
    assert 0 <= row["ensemble"]["coverage80"] <= 100 and 0 <= row["lstm"]["coverage80"] <= 100
    assert len(manifest["lstm"]["shrink"]) == 4 and len(manifest["lightgbm"]["shrink"]) == 4
    card = (Path(bundle) / "MODEL_CARD.md").read_text()
    assert "| sequence-gru | 20 | 20% |" in card and "| all | 40 | 20% |" in card
    assert "| served MAE | x last value | LSTM x last value | LightGBM x last value |" in card
    # The LSTM's share of the ensemble is chosen on the LCBench validation tasks, for the
    # bundled model and each fold, and served.
    from earlystop_predict.training.pipeline import ENSEMBLE_WEIGHTS

    for entry in [manifest["ensemble"]] + [json.loads(
            (Path(bundle) / f["dir"] / "manifest.json").read_text())["ensemble"]
            for f in manifest["folds"]]:
        errors = entry["validation_mae"]
        assert len(errors) == 11 and entry["lstm_weight"] in ENSEMBLE_WEIGHTS
        assert errors[f"{entry['lstm_weight']:.1f}"] == min(errors.values())
    w = manifest["ensemble"]["lstm_weight"]
    assert f"Served: the LSTM and LightGBM averaged ({w:.1f} : {1 - w:.1f}" in card
    assert load_model(bundle).lstm_weight == w
    rec = RunRecord.from_dict(_runs("x", 1, 9)[0]).truncated(5)
    fc = load_model(bundle).forecast(rec, 30)
    assert fc.model == ("lstm" if w == 1.0 else "lstm+lightgbm")
    assert 0 <= fc.quantile(0.1) <= fc.mean <= 1


def test_rank_orders_candidates_by_zero_epoch_forecast(bundle, tmp_path, capsys) -> None:
    cands = [{"run_id": f"c{i}", "hparams": {"learning_rate": lr, "optimizer": "adam"},
              "meta": {"max_epochs": 30}} for i, lr in enumerate([1e-4, 1e-2, 0.9])]
    path = tmp_path / "cands.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cands))
    out = tmp_path / "ranked.jsonl"
    assert main(["rank", str(path), "--target", "30", "--model", bundle,
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert sorted(r["run_id"] for r in rows) == ["c0", "c1", "c2"]
    means = [r["mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    assert rows[0]["model"] == "prior" and set(rows[0]["quantiles"]) == {
        "0.1", "0.25", "0.5", "0.75", "0.9"}
    # The synthetic curves peak at lr = 1e-2: the prior learned it from the corpora.
    assert rows[0]["run_id"] == "c1"
    assert rank(cands, 30, load_prior(bundle))[0]["run_id"] == "c1"


def test_rank_rejects_bad_candidates(bundle, tmp_path, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"hparams": {"learning_rate": 0.1}}\n{"meta": {}}\n')
    assert main(["rank", str(path), "--target", "30", "--model", bundle]) == 2
    assert "line 2" in capsys.readouterr().err
    with pytest.raises(RecordError, match="accuracy-like"):
        rank([{"hparams": {}, "metric": "val_loss", "mode": "min"}], 30, load_prior(bundle))
    with pytest.raises(ConfigError):
        rank([{"hparams": {}}], 0, load_prior(bundle))


def _fine_tune(bundle: str, tmp_path, runs: int, seed: int) -> tuple[list, object, dict]:
    """``train --from`` on ``runs`` runs of a "new family" whose best learning rate is
    100x lower than the base has seen: (runs, output directory, manifest)."""
    history = [RunRecord.from_dict(r) for r in _runs("new-family", runs, seed, lr_shift=2.0)]
    src = tmp_path / "history.jsonl"
    write_records(src, history)
    out = tmp_path / "tuned"
    # --min-gain -inf: these tests check the fine-tuned model itself, served whatever
    # its score on the held-out runs
    assert main(["train", "--from", str(src), "--base", bundle, "--output", str(out),
                 "--lstm-epochs", "2", "--threads", "1", "--min-gain=-inf"]) == 0
    return history, out, json.loads((out / "manifest.json").read_text())


def test_fine_tune_from_history_writes_a_usable_model_dir(bundle, tmp_path, capsys) -> None:
    from pathlib import Path

    history, out, manifest = _fine_tune(bundle, tmp_path, 40, 7)
    ft = manifest["fine_tuned"]
    assert (ft["train_runs"], ft["validation_runs"], ft["test_runs"]) == (26, 6, 8)
    assert ft["base"] == bundle
    report = manifest["fine_tune_report"]
    assert set(report) == {"base", "fine-tuned"} and report["base"]["runs"] == 8
    assert "after fine-tuning" in (out / "MODEL_CARD.md").read_text()
    assert "->" in capsys.readouterr().out
    # 40 runs are too few to grow a history model on: the LSTM serves alone.
    assert manifest["blend"]["weight"] == 1.0 and "fewer than 100 runs" in \
        manifest["blend"]["rule"]
    assert "history" not in manifest["artifacts"] and not (out / "history.txt.gz").exists()
    fc = load_model(out).forecast(history[0].truncated(4), 20)
    assert fc.model == _served(bundle)
    assert load_prior(out).forecast_configs([{"hparams": {}}], 20)[0].model == "prior"
    # The base model directory is untouched.
    assert "fine_tuned" not in json.loads((Path(bundle) / "manifest.json").read_text())


def test_fine_tune_on_enough_runs_serves_the_lstm_blended_with_a_history_model(
        bundle, tmp_path) -> None:
    history, out, manifest = _fine_tune(bundle, tmp_path, 120, 8)
    blend = manifest["blend"]
    # 18 validation runs are too few to fit the weight: an equal blend, unless the
    # LSTM alone clearly beat it there.
    assert blend["validation_runs"] == 18 and len(blend["validation_mae"]) == 11
    assert blend["weight"] in (0.5, 1.0) and (blend["weight"] == 0.5) == \
        blend["rule"].startswith("equal")
    assert "history" in manifest["artifacts"]
    assert blend["rule"] in (out / "MODEL_CARD.md").read_text()
    # Served at a weight below 1, the directory blends the two models' forecasts.
    w = 0.4
    (out / "manifest.json").write_text(json.dumps({**manifest, "blend": {"weight": w}}))
    served = load_model(out)
    assert isinstance(served, BlendForecaster) and served.weight == w
    prefix = history[0].truncated(4)
    fc = served.forecast(prefix, 20)
    alone = served.primary.forecast(prefix, 20)
    grown = HistoryForecaster.from_dir(out, manifest).forecast(prefix, 20)
    assert fc.model == f"{_served(bundle)}+history" and alone.model == _served(bundle)
    assert fc.mean == pytest.approx(w * alone.mean + (1 - w) * grown.mean)
    assert fc.quantiles["0.9"] == pytest.approx(
        w * alone.quantiles["0.9"] + (1 - w) * grown.quantiles["0.9"])
    # A corrupt history model: the directory still serves, each forecast says why.
    (out / "history.txt.gz").write_bytes(b"\x1f\x8bbroken")
    fc = load_model(out).forecast(prefix, 20)
    assert fc.model == _served(bundle) and "history model unavailable" in fc.reason
    assert "sha256 mismatch" in fc.reason


def test_history_features_match_between_training_and_serving(corpus) -> None:
    """The history model's features of a run, computed as training computes them (from
    a batch of curves) and as serving does (from its record), are the same."""
    from earlystop_predict.forecast.lgbm import AUX_NAMES, record_matrix
    from earlystop_predict.training.lgbm_train import batch_samples
    from earlystop_predict.training.real import read_runs

    records = read_runs(corpus)[:12]
    rows = np.arange(len(records))
    batch = RealCurves.from_records(records).sample(rows, np.random.default_rng(0),
                                                    augment=False)
    observed = np.array([3 + i % 7 for i in rows])
    ends = np.array([r.n_epochs for r in records])
    x_train, _, _ = batch_samples(batch, None, 0, observed, ends, aux=True)
    x_serve = record_matrix([r.truncated(int(e)) for r, e in zip(records, observed, strict=True)],
                            list(ends), [0] * len(records), aux=True)
    assert x_train.shape == x_serve.shape
    np.testing.assert_allclose(x_train, x_serve, rtol=1e-5, atol=1e-6)
    aux = x_serve[:, -len(AUX_NAMES):]
    # every run records validation loss and training accuracy, none training loss
    assert np.isfinite(aux[:, :5]).all() and np.isnan(aux[:, 5:]).all()
    gap = AUX_NAMES.index("train_val_gap")
    np.testing.assert_allclose(aux[:, gap], 0.02, atol=1e-6)  # train acc = val acc + 0.02


def test_fine_tune_needs_enough_runs(bundle, tmp_path, capsys) -> None:
    src = tmp_path / "few.jsonl"
    write_records(src, [RunRecord.from_dict(r) for r in _runs("f", 5, 1)])
    assert main(["train", "--from", str(src), "--base", bundle,
                 "--output", str(tmp_path / "o")]) == 2
    assert "at least 20 runs" in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.json").exists()


def _stopped_ledger(tmp_path, n: int = 40, completed_every: int = 4) -> str:
    """A ledger as a user's study leaves it: most runs stopped early, a few completed."""
    from earlystop_predict.ledger import Ledger

    path = tmp_path / "study.db"
    with Ledger(path) as led:
        for i, row in enumerate(_runs("study", n, 11)):
            rec = RunRecord.from_dict(row)
            led.start_run(rec, study="s", target_epoch=rec.meta["max_epochs"])
            stop = None if i % completed_every == 0 else 5 + i % 4
            for ep in rec.epochs[:stop]:
                led.log_epoch(rec.run_id, ep)
            last = rec.epochs[:stop][-1]
            led.finish_run(rec.run_id, final_value=last["val_accuracy"],
                           final_epoch=last["epoch"],
                           stopped=None if stop is None else {"epoch": stop, "reason": "x"},
                           status="completed" if stop is None else "stopped")
    return str(path)


def test_fine_tune_on_a_ledger_of_stopped_runs_warns_of_nothing_but_the_verdict(
        bundle, tmp_path, capsys) -> None:
    import warnings

    src = _stopped_ledger(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["train", "--from", src, "--base", bundle, "--output",
                   str(tmp_path / "tuned"), "--lstm-epochs", "2", "--threads", "1"])
    assert rc == 0
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not [m for m in messages if "empty slice" in m], messages


def test_a_fine_tune_that_does_not_beat_the_base_serves_the_base(bundle, tmp_path,
                                                                  capsys) -> None:
    from pathlib import Path

    from earlystop_predict.training.finetune import fine_tune

    src = _stopped_ledger(tmp_path, n=40, completed_every=2)
    out = tmp_path / "tuned"
    # a gain no model can reach: the fine-tuned one is refused, loudly
    manifest = fine_tune(src, out, base=bundle, lstm_epochs=2, threads=1, min_gain=1000.0,
                         progress=lambda s: None)
    err = capsys.readouterr().err
    assert "WARNING: the fine-tuned model does not beat the base" in err and "rejected" in err
    assert manifest["fine_tuned"]["served"] == "base"
    base_manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    served = json.loads((out / "manifest.json").read_text())
    assert served["artifacts"] == base_manifest["artifacts"]
    assert set(served["fine_tune_report"]) == {"base", "fine-tuned"}
    probe = RunRecord.from_dict(_runs("x", 1, 9)[0]).truncated(5)
    assert load_model(out).forecast(probe, 30).mean == load_model(bundle).forecast(probe, 30).mean
    # the fine-tuned model is kept, loadable, beside it
    assert load_model(out / "rejected").forecast(probe, 30).model == _served(bundle)
    assert "Fine-tuned from" in (out / "MODEL_CARD.md").read_text()
