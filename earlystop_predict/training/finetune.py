"""``earlystop-predict train --from RUNS --base bundled``: adapt the accModels to a
user's own tuning history.

A user's past runs (a ledger, a corpus or run records) are split by run: a test
part held out for the before/after report, a validation part for early stopping
and interval calibration, the rest trained on. The LSTM continues from the base
weights at a small learning rate (the base itself is a candidate, so the chosen
weights are never worse on the validation runs than the base); the LightGBM and
zero-epoch boosters grow new trees on top of the base ones.

A third model, the history model, is grown on the user's runs alone: LightGBM
boosters on the target curve's features and those of the run's other curves
(validation loss, training accuracy and loss). The directory then serves a blend
of the LSTM and the history model (:class:`~earlystop_predict.forecast.base.BlendForecaster`):
equal weights; a weight fitted on the validation runs when there are enough of
them; the LSTM alone where it clearly beats the blend there (:func:`fit_blend_weight`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earlystop_predict.errors import ConfigError, ModelArtifactError
from earlystop_predict.forecast.artifacts import (
    bundled_dir,
    read_manifest,
    sha256_file,
    write_manifest,
)
from earlystop_predict.forecast.base import Forecaster
from earlystop_predict.forecast.compose import AutoForecaster, ensemble_weight, load_model
from earlystop_predict.forecast.history import (  # noqa: F401 - BLEND_FRACTIONS: its old home
    BLEND_FRACTIONS,
    BLEND_WEIGHTS,
    blend_queries,
    weight_errors,
)
from earlystop_predict.forecast.lgbm import LGBMForecaster
from earlystop_predict.forecast.lstm import LSTMForecaster, LSTMWeights
from earlystop_predict.forecast.prior import PriorForecaster
from earlystop_predict.records.record import RunRecord
from earlystop_predict.training.evaluate import completed
from earlystop_predict.training.pipeline import FRACTIONS, family_report, write_model_card
from earlystop_predict.training.real import RealCurves, read_runs, usable

MIN_RUNS = 20
#: Completed validation runs from which the blend weight is fitted; with fewer, the
#: two models are averaged with equal weights.
MIN_FIT_RUNS = 100
#: Runs needed to grow a history model at all. From 200 runs of a new family the
#: equal blend cut 4 to 12 points more error than the LSTM alone on four of six
#: families and was within a point on the other two; from 50 it was as often worse
#: as better (breast-cancer: -9 % against +1 %).
MIN_HISTORY_RUNS = 100


def fit_blend_weight(primary: Forecaster, history: Forecaster, runs: Sequence[RunRecord],
                     seed: int = 0) -> tuple[float, dict[str, Any]]:
    """The primary's share in the blend, and how it was chosen.

    Each weight in 0, 0.1 ... 1 is scored by the blend's MAE forecasting each
    completed run's last epoch from 10-50 % of it. With at least
    :data:`MIN_FIT_RUNS` completed runs the best weight is taken. With fewer, an
    estimated weight is mostly noise, so the two are averaged, 0.5 each (on the
    collector's families, 30 validation runs favoured the LSTM where the equal blend
    then did better on held-out runs), unless the primary alone beats the equal blend
    on 95 % of bootstrap resamples of the runs: then it serves alone (weight 1).
    """
    done = completed(runs)
    if not done:
        return 1.0, {"rule": "primary alone: no completed validation run"}
    prefixes, ends, y = blend_queries(done, BLEND_FRACTIONS)
    shape = (len(BLEND_FRACTIONS), len(done))
    a = np.array([f.mean for f in primary.forecast_many(prefixes, ends)]).reshape(shape)
    b = np.array([f.mean for f in history.forecast_many(prefixes, ends)]).reshape(shape)
    y = y.reshape(shape)
    maes = {f"{w:.1f}": float(100 * e)
            for w, e in zip(BLEND_WEIGHTS, weight_errors(a.ravel(), b.ravel(), y.ravel()),
                            strict=True)}
    info: dict[str, Any] = {"validation_runs": len(done), "validation_mae": maes}
    if len(done) >= MIN_FIT_RUNS:
        return float(min(maes, key=lambda k: (maes[k], -float(k)))), {**info, "rule": "fitted"}
    # per run: how much worse the equal blend did than the primary alone
    worse = (np.abs(0.5 * (a + b) - y) - np.abs(a - y)).mean(axis=0)
    picks = np.random.default_rng(seed).integers(0, len(worse), (1000, len(worse)))
    if (worse[picks].mean(axis=1) > 0).mean() >= 0.95:
        return 1.0, {**info, "rule": "primary alone (it beat the equal blend on the "
                                     "validation runs, in 95 % of bootstrap resamples)"}
    return 0.5, {**info, "rule": f"equal (fewer than {MIN_FIT_RUNS} validation runs)"}


def _grow_history(records: Sequence[RunRecord], tr: np.ndarray, va: np.ndarray,
                  val: list[Any], served: Forecaster, out: Path, *, seed: int,
                  threads: int | None) -> dict[str, Any]:
    """Grow the history model (``out/history.txt.gz``) and choose its blend weight; the
    manifest's ``blend`` entry, with ``file`` set when the model was written."""
    from earlystop_predict.training.lgbm_train import train_history

    if len(records) < MIN_HISTORY_RUNS:
        (out / "history.txt.gz").unlink(missing_ok=True)  # a stale one of an earlier run
        return {"weight": 1.0, "rule": f"LSTM alone: fewer than {MIN_HISTORY_RUNS} runs "
                                        "to grow a history model on"}
    history = train_history([records[i] for i in tr], val, seed=seed, threads=threads)
    weight, info = fit_blend_weight(served, history, [records[i] for i in va], seed=seed)
    # Weight and intervals chosen, the history model is grown again on the validation
    # runs too (its calibration kept from the runs it had not seen).
    grown = train_history([records[i] for i in np.concatenate([tr, va])], seed=seed,
                          threads=threads)
    grown.calibration = history.calibration
    grown.save(out / "history.txt.gz")
    return {"weight": weight, "of": "the served ensemble (lstm + lightgbm) and history", **info,
            "file": "history.txt.gz"}


def split_runs(n: int, test_fraction: float, val_fraction: float,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) row indices of ``n`` runs, a seeded split by run."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    n_val = max(1, int(round(val_fraction * n)))
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def _base_dir(base: str | os.PathLike[str]) -> Path:
    return bundled_dir() if str(base) in ("bundled", "auto") else Path(base)


def fine_tune(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
              base: str | os.PathLike[str] = "bundled", test_fraction: float = 0.2,
              val_fraction: float = 0.15, lstm_epochs: int = 30, lr: float = 1e-3,
              seed: int = 0, threads: int | None = None, min_gain: float = 0.0,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune the base model directory on the runs in ``source``; write ``output``.

    Args:
        source: a ledger (``.db``), a corpus (``.jsonl.gz``) or a JSONL of run records.
        output: the model directory to write (``model=DIR`` for callbacks and CLI).
        base: ``"bundled"`` or a model directory. Default ``"bundled"``.
        test_fraction: share of runs held out for the report. Default 0.2.
        val_fraction: share for early stopping and calibration. Default 0.15.
        lstm_epochs: LSTM passes over the training runs. Default 30.
        lr: peak LSTM learning rate. Default 1e-3.
        seed: the split's and the training's seed. Default 0.
        threads: CPU threads (default all).
        min_gain: points of held-out MAE (mean over the observed fractions) the
            fine-tuned model must gain over the base to be served. Default 0: it must
            do better at all; ``-inf`` serves it whatever its score. Otherwise a warning goes to stderr, the
            directory serves a copy of the base and the fine-tuned model is kept in
            ``output/rejected`` (:func:`serve_base`).
        progress: where progress lines go. Default ``print``.

    Returns:
        The manifest written, with ``fine_tuned`` (data, split; ``served: "base"`` when
        the fine-tuned model lost to the base) and ``fine_tune_report`` (errors of base
        and fine-tuned on the test runs).

    Raises:
        ConfigError: fewer than 20 usable runs (accuracy-like target, >= 2 epochs),
            or fractions out of range.
        ModelArtifactError: the base directory lacks a model or fails its checksum.
    """
    from earlystop_predict.training.lgbm_train import train_lgbm
    from earlystop_predict.training.lstm_train import (
        LSTMNet,
        fit_calibration,
        save_lstm,
        train_lstm,
    )
    from earlystop_predict.training.prior_train import train_prior

    t0 = time.time()
    if not (0 < test_fraction < 0.5 and 0 < val_fraction < 0.5):
        raise ConfigError("test/validation fraction", "in (0, 0.5)",
                          (test_fraction, val_fraction))
    if not (isinstance(min_gain, (int, float)) and min_gain == min_gain):
        raise ConfigError("min_gain", "a number of points (-inf: always serve the "
                                      "fine-tuned model)", min_gain)
    records = usable(read_runs(source))
    if len(records) < MIN_RUNS:
        raise ConfigError("--from", f"at least {MIN_RUNS} runs with an accuracy-like "
                                    "target metric and >= 2 epochs", f"{len(records)} in {source}")
    base_dir = _base_dir(base)
    base_manifest = read_manifest(base_dir)
    base_lstm = LSTMForecaster.from_dir(base_dir, base_manifest)
    base_lgbm = LGBMForecaster.from_dir(base_dir, base_manifest)
    try:
        base_prior: PriorForecaster | None = PriorForecaster.from_dir(base_dir, base_manifest)
    except ModelArtifactError:
        base_prior = None
    tr, va, te = split_runs(len(records), test_fraction, val_fraction, seed)
    curves = RealCurves.from_records(records)
    repeat = max(1, int(np.ceil(1024 / max(len(tr), 1))))
    parts = [(curves, np.repeat(tr, repeat))]
    val = [(curves, va)]
    progress(f"fine-tuning {base_dir} on {len(tr)} runs (validation {len(va)}, "
             f"held out {len(te)}) from {source}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)

    net, info = train_lstm(parts, val, epochs=lstm_epochs, lr=lr, seed=seed, threads=threads,
                           init=LSTMNet.from_weights(base_lstm.weights), progress=progress)
    calib, shrink = fit_calibration(net, val)
    save_lstm(net, calib, out / "lstm.npz", shrink=shrink)
    lgbm = train_lgbm(parts, val, draws=4, seed=seed, init=base_lgbm, learning_rate=0.03,
                      min_data_in_leaf=40, rounds=400, threads=threads, progress=progress)
    lgbm.save(out / "lgbm.txt.gz")
    artifacts = {
        "lstm": {"file": "lstm.npz", "sha256": sha256_file(out / "lstm.npz"),
                 "format": "npz (numpy, no pickle)"},
        "lightgbm": {"file": "lgbm.txt.gz", "sha256": sha256_file(out / "lgbm.txt.gz"),
                     "format": "LightGBM text models, gzip"},
    }
    new_weights = LSTMWeights.load(out / "lstm.npz")
    served = AutoForecaster(LSTMForecaster(new_weights), lgbm,
                            lstm_weight=ensemble_weight(base_manifest))
    blend = _grow_history(records, tr, va, val, served, out, seed=seed, threads=threads)
    if blend.pop("file", None):
        artifacts["history"] = {
            "file": "history.txt.gz", "sha256": sha256_file(out / "history.txt.gz"),
            "format": "LightGBM text models, gzip (grown on the user's runs alone)"}
    w = blend["weight"]
    progress(f"blend: {w:.1f} LSTM, {1 - w:.1f} history model; {blend['rule']}")
    if base_prior is not None:
        prior = train_prior(parts, val, draws=2, seed=seed, init=base_prior,
                            learning_rate=0.03, min_data_in_leaf=20, rounds=300,
                            threads=threads, progress=progress)
        prior.save(out / "prior.txt.gz")
        artifacts["prior"] = {"file": "prior.txt.gz", "sha256": sha256_file(out / "prior.txt.gz"),
                              "format": "LightGBM text models, gzip (zero-epoch forecasts)"}
    manifest = {k: v for k, v in base_manifest.items()
                if k not in ("schema", "artifacts", "held_out_families", "fine_tune_report",
                             "folds")}
    manifest.update({
        "artifacts": artifacts,
        "lstm": {**base_manifest.get("lstm", {}), "epochs": lstm_epochs,
                 "val_mae": info["val_mae"], "calibration": calib.tolist(),
                 "shrink": shrink.tolist(),
                 "max_target_epoch": new_weights.max_target},
        "lightgbm": {**base_manifest.get("lightgbm", {}),
                     "calibration": lgbm.calibration.tolist(), "shrink": lgbm.shrink.tolist()},
        "blend": blend,
        "fine_tuned": {"base": str(base) if str(base) != "auto" else "bundled",
                       "base_version": base_manifest.get("version"),
                       "source": str(source), "runs": len(records),
                       "train_runs": int(len(tr)), "validation_runs": int(len(va)),
                       "test_runs": int(len(te)), "seed": seed,
                       "split": "by run (seeded)", "lr": lr},
    })
    write_manifest(out, manifest)

    progress("scoring base and fine-tuned models on the held-out runs...")
    m = read_manifest(out)
    new = {"lstm": load_model(out), "lightgbm": LGBMForecaster.from_dir(out, m)}
    old = {"lstm": AutoForecaster(base_lstm, base_lgbm,
                                   lstm_weight=ensemble_weight(base_manifest)),
           "lightgbm": base_lgbm}
    test_records = [records[i] for i in te]
    report = {}
    for name, models in (("base", old), ("fine-tuned", new)):
        report[name] = family_report(test_records, models)["all"]
    manifest["fine_tune_report"] = report
    manifest["train_seconds"] = round(time.time() - t0, 1)
    write_manifest(out, manifest)
    write_model_card(out, manifest)
    n_done = len(completed(test_records))
    for frac in FRACTIONS:
        key = f"{int(frac * 100)}%"
        b, f = report["base"][key]["lstm"], report["fine-tuned"][key]["lstm"]
        progress(f"held-out runs ({n_done} completed), {key} observed: MAE {b['mae']:.2f} -> "
                 f"{f['mae']:.2f} pts, coverage {b['coverage80']:.0f} -> "
                 f"{f['coverage80']:.0f} %")
    return _served(out, base_dir, base_manifest, manifest, n_done=n_done, min_gain=min_gain)


def _served(out: Path, base_dir: Path, base_manifest: dict[str, Any],
            manifest: dict[str, Any], *, n_done: int, min_gain: float) -> dict[str, Any]:
    """Keep the fine-tuned model if it beats the base on the held-out runs; else say so
    on stderr and serve the base (:func:`serve_base`). The manifest served."""
    verdict = judge_fine_tune(manifest["fine_tune_report"], min_gain=min_gain)
    if verdict is None:
        _warn(f"no completed held-out run to compare the fine-tuned model with the base; "
              f"{out} serves the fine-tuned model unchecked")
        return manifest
    if verdict > 0:
        return manifest
    _warn(f"the fine-tuned model does not beat the base on the {n_done} held-out runs "
          f"(mean MAE {-(verdict + min_gain):+.2f} points against the base); {out} serves the "
          f"base model, the fine-tuned one is kept in {out / REJECTED}")
    return serve_base(out, base_dir, base_manifest, manifest)


#: Subfolder of an output directory where a fine-tuned model that lost to its base goes.
REJECTED = "rejected"


def _warn(text: str) -> None:
    print(f"earlystop-predict train: WARNING: {text}", file=sys.stderr)


def judge_fine_tune(report: dict[str, Any], *, min_gain: float = 0.0) -> float | None:
    """How many points of MAE the fine-tuned model gains over the base on the held-out
    runs, less ``min_gain`` (mean over the observed fractions of the served model's
    MAE); > 0 means it beats the base. None when no fraction could be scored (no
    completed held-out run)."""
    gains = []
    for key, row in report["base"].items():
        if not isinstance(row, dict) or "lstm" not in row:
            continue
        b, f = row["lstm"]["mae"], report["fine-tuned"][key]["lstm"]["mae"]
        if np.isfinite(b) and np.isfinite(f):
            gains.append(b - f)
    return float(np.mean(gains)) - min_gain if gains else None


def serve_base(out: Path, base_dir: Path, base_manifest: dict[str, Any],
               manifest: dict[str, Any]) -> dict[str, Any]:
    """Move the fine-tuned model to ``out/rejected`` and make ``out`` serve a copy of
    the base; the manifest written (the base's, with the fine-tune's report)."""
    rejected = out / REJECTED
    rejected.mkdir(exist_ok=True)
    for entry in manifest["artifacts"].values():
        os.replace(out / entry["file"], rejected / entry["file"])
    write_manifest(rejected, {**manifest, "note": "fine-tuned model that did not beat its "
                                                  "base on the held-out runs; not served"})
    for entry in base_manifest["artifacts"].values():
        shutil.copy2(base_dir / entry["file"], out / entry["file"])
    served = {k: v for k, v in base_manifest.items()
              if k not in ("schema", "folds", "fine_tune_report")}
    served["fine_tuned"] = {**manifest["fine_tuned"], "served": "base",
                            "rejected_dir": REJECTED,
                            "reason": "the fine-tuned model did not beat the base on the "
                                      "held-out runs"}
    served["fine_tune_report"] = manifest["fine_tune_report"]
    write_manifest(out, served)
    write_model_card(out, served)
    return served

