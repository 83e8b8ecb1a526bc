"""``earlystop-predict train``: build a model directory (LSTM + LightGBM + manifest).

Reads the shared LCBench corpus (and, optionally, the user's own run records),
splits by task, trains both models with augmentation, scores them on held-out
tasks and writes ``lstm.npz``, ``lgbm.txt.gz`` and ``manifest.json``.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import artifact_path, read_manifest, sha256_file, write_manifest
from ..forecaster import AutoForecaster
from ..lgbm import LGBMForecaster
from ..lstm import LSTMForecaster, LSTMWeights
from .evaluate import evaluate, forecaster_fn, last_value_fn
from .lcbench import MAX_EPOCHS, TEST_TASKS, VAL_TASKS, lcbench_records, load_lcbench, train_tasks

FRACTIONS = (0.1, 0.2, 0.4)


def held_out_report(model_dir: str | os.PathLike[str], runs_per_task: int = 300,
                    models: dict[str, Any] | None = None) -> dict[str, Any]:
    """Errors of the models in ``model_dir`` and of last-value on the held-out tasks."""
    from ..forecaster import load_model

    records = lcbench_records(TEST_TASKS, limit_per_task=runs_per_task)
    models = models or {"lstm": load_model(model_dir), "lightgbm": load_model(model_dir)}
    out: dict[str, Any] = {}
    for frac in FRACTIONS:
        e = max(1, int(round(frac * MAX_EPOCHS)))
        row = {"observed_epochs": e}
        for name, model in models.items():
            row[name] = evaluate(forecaster_fn(model), records, e, MAX_EPOCHS)
        row["last_value"] = evaluate(last_value_fn, records, e, MAX_EPOCHS)
        out[f"{int(frac * 100)}%"] = row
    return out


def train_bundle(output: str | os.PathLike[str], *, lcbench: str | None = None,
                 lstm_epochs: int = 20, lgbm_draws: int = 6, seed: int = 0,
                 threads: int | None = None, refit_from: str | os.PathLike[str] | None = None,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train both models and write a complete model directory at ``output``.

    With ``refit_from`` (a directory this function wrote from the train/validation
    split), both models are refitted on the training *and* validation tasks with the
    same recipe: the LSTM for the same epochs, each booster for the rounds early
    stopping chose there, and the interval calibration fitted there on the
    validation tasks is kept (out-of-task, so still honest). Held-out tasks stay
    held out either way."""
    from .data import static_matrix
    from .lgbm_train import train_lgbm
    from .lstm_train import fit_calibration, save_lstm, train_lstm

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = load_lcbench(lcbench)
    static = static_matrix(data)
    fit_tasks = train_tasks(data) + (list(VAL_TASKS) if refit_from else [])
    tr = np.where(np.isin(data.task_id, fit_tasks))[0]
    va = np.where(np.isin(data.task_id, VAL_TASKS))[0]
    progress(f"corpus: {len(data.task_id)} curves; train {len(tr)} rows on "
             f"{len(fit_tasks)} tasks" + ("" if refit_from else
                                          f", validation {len(va)} on {len(VAL_TASKS)}")
             + f", held out {len(TEST_TASKS)} tasks")
    if refit_from:
        ref = read_manifest(refit_from)
        ref_lstm = LSTMWeights.load(artifact_path(refit_from, ref, "lstm"))
        ref_lgbm = LGBMForecaster.from_dir(refit_from, ref)
        lstm_epochs = int(ref.get("lstm", {}).get("epochs", lstm_epochs))
        lgbm_draws = int(ref.get("lightgbm", {}).get("draws", lgbm_draws))
    net, info = train_lstm(data, static, tr, None if refit_from else va[::3],
                           epochs=lstm_epochs, seed=seed, threads=threads, progress=progress)
    calib = ref_lstm.calib if refit_from else fit_calibration(net, data, static, va)
    save_lstm(net, calib, out / "lstm.npz")
    progress(f"lstm: val MAE {info['val_mae']:.4f}, calibration {calib.round(3).tolist()}")
    lgbm = train_lgbm(data, static, tr, None if refit_from else va, draws=lgbm_draws,
                      seed=seed, threads=threads, progress=progress,
                      fixed_rounds={name: b.current_iteration()
                                    for name, b in ref_lgbm.boosters.items()}
                      if refit_from else None)
    if refit_from:
        lgbm.calibration = ref_lgbm.calibration
    lgbm.save(out / "lgbm.txt.gz")
    manifest: dict[str, Any] = {
        "version": _dt.date.today().isoformat(),
        "artifacts": {
            "lstm": {"file": "lstm.npz", "sha256": sha256_file(out / "lstm.npz"),
                     "format": "npz (numpy, no pickle)"},
            "lightgbm": {"file": "lgbm.txt.gz", "sha256": sha256_file(out / "lgbm.txt.gz"),
                         "format": "LightGBM text models, gzip"},
        },
        "training_data": {
            "corpus": "LCBench surrogate (YAHPO Gym), shared/data/lcbench_surrogate",
            "curves": int(len(data.task_id)), "train_tasks": fit_tasks,
            "validation_tasks": list(VAL_TASKS), "held_out_tasks": list(TEST_TASKS),
            "split": "by task", "augmentation": "horizons 8-120 (time warp), binomial + jitter "
            "noise on inputs, random hparam/meta masking, random E and M",
        },
        "lstm": {"epochs": lstm_epochs, "val_mae": info["val_mae"],
                 "calibration": calib.tolist(), "max_target_epoch":
                 LSTMWeights.load(out / "lstm.npz").max_target},
        "lightgbm": {"calibration": lgbm.calibration.tolist(), "draws": lgbm_draws},
        "seed": seed,
        "refit_from": None if refit_from is None else {
            "version": ref.get("version"), "train_tasks": ref["training_data"]["train_tasks"],
            "lstm_val_mae": ref.get("lstm", {}).get("val_mae"),
            "held_out": ref.get("held_out"),
            "note": "refitted on train + validation tasks; calibration from that split run"},
    }
    write_manifest(out, manifest)
    progress("scoring on held-out tasks...")

    m = read_manifest(out)
    lstm_model = LSTMForecaster.from_dir(out, m)
    lgbm_model = LGBMForecaster.from_dir(out, m)
    manifest["held_out"] = held_out_report(out, models={
        "lstm": AutoForecaster(lstm_model, lgbm_model), "lightgbm": lgbm_model})
    manifest["train_seconds"] = round(time.time() - t0, 1)
    write_manifest(out, manifest)
    for frac, row in manifest["held_out"].items():
        progress(f"held out {frac}: " + ", ".join(
            f"{k} MAE {v['mae']:.2f}" for k, v in row.items() if isinstance(v, dict)))
    return manifest
