"""``earlystop-predict train``: build a model directory (LSTM + LightGBM + manifest).

Reads the shared LCBench corpus and the real corpus collected by
``earlystop-predict collect``, splits LCBench by task and the real runs by family,
trains the LSTM, the LightGBM fallback and the zero-epoch model with augmentation,
scores them on held-out tasks and families and writes ``lstm.npz``,
``lgbm.txt.gz``, ``prior.txt.gz``, ``manifest.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from earlystop_predict.forecast.artifacts import (
    bundled_dir,
    read_manifest,
    sha256_file,
    write_manifest,
)
from earlystop_predict.forecast.base import Forecaster
from earlystop_predict.forecast.compose import AutoForecaster, ensemble_weight, mix_forecasts
from earlystop_predict.forecast.lgbm import LGBMForecaster
from earlystop_predict.forecast.lstm import LSTMForecaster, LSTMWeights
from earlystop_predict.records.record import RunRecord
from earlystop_predict.training.data import ForecastRows, LCBenchCurves, Part, fit_post
from earlystop_predict.training.evaluate import (
    completed,
    evaluate,
    evaluate_end,
    forecaster_fn,
    last_value_fn,
)
from earlystop_predict.training.lcbench import (
    MAX_EPOCHS,
    TEST_TASKS,
    VAL_TASKS,
    lcbench_records,
    load_lcbench,
    train_tasks,
)
from earlystop_predict.training.real import RealCurves, family_of, read_runs, usable

FRACTIONS = (0.1, 0.2, 0.4)
#: Cross-validation folds of the real corpus's families: a model is trained without
#: each group and scored on it (families not listed are never held out).
FAMILY_FOLDS: tuple[tuple[str, ...], ...] = (
    ("sequence-gru", "wine", "text-hf-steps", "images-cnn"),
    ("text-hf", "digits-cnn", "breast-cancer", "tabular-large"),
    ("digits-mlp", "synthetic", "keras-mlp", "lightning-sched"))


def bundled_corpus() -> Path:
    """The real-run corpus shipped with the package (``earlystop-predict collect``)."""
    return bundled_dir() / "corpus" / "runs.jsonl.gz"


def held_out_report(model_dir: str | os.PathLike[str], runs_per_task: int = 300,
                    models: dict[str, Any] | None = None,
                    lcbench: str | None = None) -> dict[str, Any]:
    """Errors of the models in ``model_dir`` (the served ensemble, the LSTM with its
    fallback, and LightGBM) and of last value on the LCBench tasks held out of training."""
    records = lcbench_records(TEST_TASKS, path=lcbench, limit_per_task=runs_per_task)
    models = models or _models(Path(model_dir))
    out: dict[str, Any] = {}
    for frac in FRACTIONS:
        e = max(1, int(round(frac * MAX_EPOCHS)))
        row = {"observed_epochs": e}
        for name, model in models.items():
            row[name] = evaluate(forecaster_fn(model), records, e, MAX_EPOCHS)
        row["last_value"] = evaluate(last_value_fn, records, e, MAX_EPOCHS)
        out[f"{int(frac * 100)}%"] = row
    return out


#: The LSTM shares :func:`choose_ensemble_weight` tries.
ENSEMBLE_WEIGHTS = tuple(round(0.1 * k, 1) for k in range(11))


def choose_ensemble_weight(model_dir: str | os.PathLike[str], runs_per_task: int = 300,
                           lcbench: str | None = None) -> dict[str, Any]:
    """The manifest's ``ensemble`` entry of a model directory: the LSTM's share of least
    MAE (mean over 10, 20 and 40 % observed) forecasting the last epoch of the LCBench
    validation tasks' curves (never the held-out tasks or a real family), ties to the
    larger share; with each share's MAE in points."""
    directory = Path(model_dir)
    records = lcbench_records(VAL_TASKS, path=lcbench, limit_per_task=runs_per_task)
    m = read_manifest(directory)
    lgbm = LGBMForecaster.from_dir(directory, m)
    lstm = AutoForecaster(LSTMForecaster.from_dir(directory, m), lgbm)
    errors = np.zeros(len(ENSEMBLE_WEIGHTS))
    for frac in FRACTIONS:
        e = max(1, int(round(frac * MAX_EPOCHS)))
        prefixes = [r.truncated(e) for r in records]
        truth = np.array([r.series(r.metric)[MAX_EPOCHS - 1] for r in records])
        a = lstm.forecast_many(prefixes, MAX_EPOCHS)
        b = lgbm.forecast_many(prefixes, MAX_EPOCHS)
        for k, w in enumerate(ENSEMBLE_WEIGHTS):
            mixed = [mix_forecasts(x, y, w, "", second_point=y.quantile(0.5)).mean
                     if x.model == "lstm" else x.mean for x, y in zip(a, b, strict=True)]
            errors[k] += 100 * float(np.mean(np.abs(np.array(mixed) - truth))) / len(FRACTIONS)
    best = min(range(len(errors)), key=lambda k: (round(errors[k], 6), -ENSEMBLE_WEIGHTS[k]))
    return {"lstm_weight": ENSEMBLE_WEIGHTS[best],
            "rule": f"least MAE on the LCBench validation tasks ({len(records)} curves) "
                    "at 10, 20 and 40 % observed",
            "validation_mae": {f"{w:.1f}": round(float(v), 4)
                               for w, v in zip(ENSEMBLE_WEIGHTS, errors, strict=True)}}


def family_report(records: Sequence[RunRecord], models: dict[str, Forecaster],
                  fractions: tuple[float, ...] = FRACTIONS) -> dict[str, Any]:
    """Per family (and ``all``): each model's and last value's errors forecasting the
    last epoch of completed runs from 10, 20 and 40 % of them."""
    runs = completed(records)
    fams = np.array([family_of(r) for r in runs])
    out: dict[str, Any] = {}
    for name in [*sorted(set(fams.tolist())), "all"]:
        sel = [r for r, f in zip(runs, fams, strict=True) if name in ("all", f)]
        rows: dict[str, Any] = {"runs": len(sel)}
        for frac in fractions:
            row = {m: evaluate_end(forecaster_fn(model), sel, frac)
                   for m, model in models.items()}
            row["last_value"] = evaluate_end(last_value_fn, sel, frac)
            rows[f"{int(frac * 100)}%"] = row
        out[name] = rows
    return out


@dataclass
class Fitted:
    """The three models of one training run, before calibration."""

    net: Any
    lstm_info: dict[str, float]
    lgbm: LGBMForecaster
    prior: Any


def _fit(parts: list[Part], val: list[Part], *, lstm_epochs: int, lgbm_draws: int, seed: int,
         threads: int | None, progress: Callable[[str], None]) -> Fitted:
    from earlystop_predict.training.lgbm_train import train_lgbm
    from earlystop_predict.training.lstm_train import train_lstm
    from earlystop_predict.training.prior_train import train_prior

    net, info = train_lstm(parts, [(s, r[::3]) for s, r in val], epochs=lstm_epochs, seed=seed,
                           threads=threads, progress=progress)
    lgbm = train_lgbm(parts, val, draws=lgbm_draws, seed=seed, threads=threads,
                      progress=progress)
    prior = train_prior(parts, val, seed=seed, threads=threads, progress=progress)
    return Fitted(net, info, lgbm, prior)


def _write(out: Path, fitted: Fitted, lstm_post: tuple[np.ndarray, np.ndarray],
           lgbm_post: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Write the artifacts with their calibration and shrinkage; their manifest entries."""
    from earlystop_predict.training.lstm_train import save_lstm

    out.mkdir(parents=True, exist_ok=True)
    save_lstm(fitted.net, lstm_post[0], out / "lstm.npz", shrink=lstm_post[1])
    fitted.lgbm.calibration, fitted.lgbm.shrink = lgbm_post
    fitted.lgbm.save(out / "lgbm.txt.gz")
    fitted.prior.save(out / "prior.txt.gz")
    return {
        "lstm": {"file": "lstm.npz", "sha256": sha256_file(out / "lstm.npz"),
                 "format": "npz (numpy, no pickle)"},
        "lightgbm": {"file": "lgbm.txt.gz", "sha256": sha256_file(out / "lgbm.txt.gz"),
                     "format": "LightGBM text models, gzip"},
        "prior": {"file": "prior.txt.gz", "sha256": sha256_file(out / "prior.txt.gz"),
                  "format": "LightGBM text models, gzip (zero-epoch forecasts)"},
    }


def _models(directory: Path) -> dict[str, Forecaster]:
    """The served ensemble and each half (the LSTM with its fallback, LightGBM)."""
    m = read_manifest(directory)
    lgbm = LGBMForecaster.from_dir(directory, m)
    lstm = LSTMForecaster.from_dir(directory, m)
    return {"ensemble": AutoForecaster(lstm, lgbm, lstm_weight=ensemble_weight(m)),
            "lstm": AutoForecaster(lstm, lgbm), "lightgbm": lgbm}


def _post(rows: dict[str, list[ForecastRows]], skip: int | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and shrinkage from held-aside rows (LCBench validation tasks and
    real families out of fold), leaving out fold ``skip``."""
    sets = [ForecastRows.concat([r for k, r in enumerate(v) if k != skip])
            for v in rows.values() if [r for k, r in enumerate(v) if k != skip]]
    return fit_post(sets)


def train_bundle(output: str | os.PathLike[str], *, lcbench: str | None = None,
                 corpus: str | os.PathLike[str] | None = "bundled",
                 folds: Sequence[Sequence[str]] = FAMILY_FOLDS, real_weight: int = 4,
                 val_fraction: float = 0.15, lstm_epochs: int = 20, lgbm_draws: int = 6,
                 seed: int = 0, threads: int | None = None,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the LSTM, the LightGBM fallback and the zero-epoch model; write a
    complete model directory (artifacts, ``manifest.json``, ``MODEL_CARD.md``).

    Data: the LCBench corpus split by task (held-out tasks never seen; validation
    tasks for early stopping and calibration) and, unless ``corpus`` is None, the
    real corpus (``"bundled"``: the one in ``models/corpus``), each run drawn
    ``real_weight`` times per epoch.

    Real families are cross-validated: for each group of ``folds`` a model is
    trained without those families (written to ``OUTPUT/folds/``) and scored on
    them, so every family's figures in the model card come from a model that
    never saw it. The interval calibration and the mean shrinkage are fitted on
    those out-of-family forecasts (and the LCBench validation tasks); a fold's own
    figures use factors fitted without it. The bundled model then trains on every
    family. ``val_fraction`` of each family's runs is held aside for early
    stopping only."""
    from earlystop_predict.training.lgbm_train import lgbm_rows
    from earlystop_predict.training.lstm_train import calibration_rows

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = load_lcbench(lcbench)
    lcb = LCBenchCurves(data)
    fit_tasks = train_tasks(data)
    tr = np.where(np.isin(data.task_id, fit_tasks))[0]
    va = np.where(np.isin(data.task_id, VAL_TASKS))[0]
    kw = {"lstm_epochs": lstm_epochs, "lgbm_draws": lgbm_draws, "seed": seed,
          "threads": threads, "progress": progress}
    rows: dict[str, dict[str, list[ForecastRows]]] = {"lstm": {"lcbench": [], "real": []},
                                                      "lightgbm": {"lcbench": [], "real": []}}
    real_info: dict[str, Any] | None = None
    fold_info: list[dict[str, Any]] = []
    cv: dict[str, Any] = {}
    parts: list[Part] = [(lcb, tr)]
    val: list[Part] = [(lcb, va)]
    if corpus is not None:
        real, records, early, folds, real_info = _real_split(
            corpus, folds, val_fraction=val_fraction, real_weight=real_weight, seed=seed)
        progress(f"LCBench: {len(data.task_id)} curves, train {len(tr)} on {len(fit_tasks)} "
                 f"tasks; real: {len(records)} runs of {len(real_info['families'])} "
                 f"families, {len(folds)} family folds")
        cv, fold_info = _cross_validate(out, (lcb, tr, va), (real, records, early), folds,
                                        rows, real_weight=real_weight, kw=kw,
                                        lcbench_path=lcbench)
        parts.append((real, np.repeat(np.where(~early)[0], real_weight)))
        val.append((real, np.where(early)[0]))
        real_info["train_runs"] = int((~early).sum())
    progress("final model: every family")
    fitted = _fit(parts, val, **kw)
    if corpus is None:
        rows["lstm"]["lcbench"].append(calibration_rows(fitted.net, lcb, va))
        rows["lightgbm"]["lcbench"].append(lgbm_rows(fitted.lgbm, lcb, va))
    lstm_post, lgbm_post = _post(rows["lstm"]), _post(rows["lightgbm"])
    manifest = _bundle_manifest(out, fitted, lstm_post, lgbm_post, data=data,
                                fit_tasks=fit_tasks, real_info=real_info, fold_info=fold_info,
                                lstm_epochs=lstm_epochs, lgbm_draws=lgbm_draws, seed=seed)
    write_manifest(out, manifest)
    manifest["ensemble"] = choose_ensemble_weight(out, lcbench=lcbench)
    write_manifest(out, manifest)
    progress(f"ensemble: {manifest['ensemble']['lstm_weight']:.1f} LSTM, "
             f"{1 - manifest['ensemble']['lstm_weight']:.1f} LightGBM (LCBench validation tasks)")
    progress("scoring on held-out tasks...")
    manifest["held_out"] = held_out_report(out, models=_models(out), lcbench=lcbench)
    if cv:
        manifest["held_out_families"] = cv
    manifest["train_seconds"] = round(time.time() - t0, 1)
    write_manifest(out, manifest)
    write_model_card(out, manifest)
    _print_summary(manifest, cv, progress)
    return manifest


def _real_split(corpus: str | os.PathLike[str], folds: Sequence[Sequence[str]], *,
                val_fraction: float, real_weight: int, seed: int
                ) -> tuple[RealCurves, list[RunRecord], np.ndarray, list[tuple[str, ...]],
                           dict[str, Any]]:
    """The real corpus read: (curves, records, early-stopping mask, the folds of the
    families present, the manifest's ``real`` entry)."""
    label = str(corpus)
    if label == "bundled":
        corpus, label = bundled_corpus(), "models/corpus/runs.jsonl.gz"
    records = usable(read_runs(corpus, option="--corpus"))
    real = RealCurves.from_records(records)
    rng = np.random.default_rng(seed)
    early = np.zeros(len(records), dtype=bool)
    for fam in sorted(set(real.group.tolist())):
        idx = np.where(real.group == fam)[0]
        early[rng.permutation(idx)[:int(round(val_fraction * len(idx)))]] = True
    present = set(real.group.tolist())
    kept = [tuple(f for f in fold if f in present) for fold in folds]
    kept = [f for f in kept if f]
    real_info = {"corpus": label, "runs": len(records),
                 "families": sorted(present), "weight": real_weight,
                 "early_stopping_runs": int(early.sum()),
                 "folds": [list(f) for f in kept]}
    return real, records, early, kept, real_info


def _cross_validate(out: Path, lcbench: tuple[Any, np.ndarray, np.ndarray],
                    real_data: tuple[RealCurves, list[RunRecord], np.ndarray],
                    folds: list[tuple[str, ...]], rows: dict[str, dict[str, list[ForecastRows]]],
                    *, real_weight: int, kw: dict[str, Any],
                    lcbench_path: str | None = None
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one model per family fold (``out/folds/foldK``), collect its held-out
    calibration rows into ``rows``; (the per-family report, the folds' entries). Each
    fold's ensemble weight is chosen on the LCBench validation tasks (``lcbench_path``:
    the corpus file, default the shared one)."""
    from earlystop_predict.training.lgbm_train import lgbm_rows
    from earlystop_predict.training.lstm_train import calibration_rows

    lcb, tr, va = lcbench
    real, records, early = real_data
    progress = kw["progress"]
    fold_info: list[dict[str, Any]] = []
    for k, fams in enumerate(folds):
        held = np.isin(real.group, list(fams))
        progress(f"fold {k + 1}/{len(folds)}: without {', '.join(fams)}")
        fitted = _fit([(lcb, tr), (real, np.repeat(np.where(~held & ~early)[0],
                                                   real_weight))],
                      [(lcb, va), (real, np.where(early & ~held)[0])], **kw)
        held_idx = np.where(held)[0]
        rows["lstm"]["real"].append(calibration_rows(fitted.net, real, held_idx))
        rows["lstm"]["lcbench"].append(calibration_rows(fitted.net, lcb, va[k::len(folds)]))
        rows["lightgbm"]["real"].append(lgbm_rows(fitted.lgbm, real, held_idx))
        rows["lightgbm"]["lcbench"].append(lgbm_rows(fitted.lgbm, lcb, va[k::len(folds)]))
        fold_info.append({"families": list(fams), "fitted": fitted, "held": held_idx})
    cv: dict[str, Any] = {}
    for k, info in enumerate(fold_info):
        fold_dir = out / "folds" / f"fold{k + 1}"
        artifacts = _write(fold_dir, info.pop("fitted"),
                           _post(rows["lstm"], skip=k),
                           _post(rows["lightgbm"], skip=k))
        fold_manifest = {
            "version": _dt.date.today().isoformat(), "artifacts": artifacts,
            "training_data": {"real": {"held_out_families": info["families"]},
                              "held_out_tasks": list(TEST_TASKS)},
            "note": f"cross-validation fold of {out}: trained without "
                    f"{', '.join(info['families'])}; not the bundled model"}
        write_manifest(fold_dir, fold_manifest)
        fold_manifest["ensemble"] = choose_ensemble_weight(fold_dir,
                                                           lcbench=lcbench_path)
        write_manifest(fold_dir, fold_manifest)
        cv.update({name: rep for name, rep in family_report(
            [records[i] for i in info.pop("held")], _models(fold_dir)).items()
            if name != "all"})
        info["dir"] = f"folds/fold{k + 1}"
    cv["all"] = _pool(cv)
    return cv, fold_info


def _bundle_manifest(out: Path, fitted: Fitted, lstm_post: tuple[np.ndarray, np.ndarray],
                     lgbm_post: tuple[np.ndarray, np.ndarray], *, data: Any,
                     fit_tasks: Any, real_info: dict[str, Any] | None,
                     fold_info: list[dict[str, Any]], lstm_epochs: int, lgbm_draws: int,
                     seed: int) -> dict[str, Any]:
    """Write the final model's artifacts; its manifest (before the held-out scores)."""
    return {
        "version": _dt.date.today().isoformat(),
        "artifacts": _write(out, fitted, lstm_post, lgbm_post),
        "training_data": {
            "corpus": "LCBench surrogate (YAHPO Gym), shared/data/lcbench_surrogate",
            "curves": int(len(data.task_id)), "train_tasks": fit_tasks,
            "validation_tasks": list(VAL_TASKS), "held_out_tasks": list(TEST_TASKS),
            "split": "LCBench by task; real runs by family (cross-validated folds)",
            "augmentation": "LCBench: horizons 8-120 (time warp), binomial + jitter noise "
            "on inputs; all: random hparam/meta masking, random E and M; real: runs "
            "without val_loss or training metrics at random",
            "real": real_info,
        },
        "lstm": {"epochs": lstm_epochs, "val_mae": fitted.lstm_info["val_mae"],
                 "calibration": lstm_post[0].tolist(), "shrink": lstm_post[1].tolist(),
                 "max_target_epoch": LSTMWeights.load(out / "lstm.npz").max_target},
        "lightgbm": {"calibration": lgbm_post[0].tolist(), "shrink": lgbm_post[1].tolist(),
                     "draws": lgbm_draws},
        "prior": {"calibration": fitted.prior.calibration.tolist()},
        "seed": seed,
        "folds": [{"dir": f["dir"], "families": f["families"]} for f in fold_info],
    }


def _print_summary(manifest: dict[str, Any], cv: dict[str, Any],
                   progress: Callable[[str], None]) -> None:
    """The held-out figures, one line each."""
    for frac, row in manifest["held_out"].items():
        progress(f"LCBench held out {frac}: " + ", ".join(
            f"{k} MAE {v['mae']:.2f}" for k, v in row.items() if isinstance(v, dict)))
    if cv:
        for frac in ("10%", "20%", "40%"):
            r = cv["all"][frac]
            served = r.get("ensemble", r["lstm"])
            progress(f"real families out of fold {frac}: served MAE {served['mae']:.2f} "
                     f"({served['mae'] / r['last_value']['mae']:.2f} x last value; lstm "
                     f"{r['lstm']['mae'] / r['last_value']['mae']:.2f}), "
                     f"coverage {served['coverage80']:.0f} %")


def _pool(report: dict[str, Any]) -> dict[str, Any]:
    """Run-weighted mean of per-family figures (every family held out in some fold)."""
    fams = [v for k, v in report.items() if k != "all"]
    total = sum(v["runs"] for v in fams)
    out: dict[str, Any] = {"runs": total}
    for frac in ("10%", "20%", "40%"):
        row: dict[str, Any] = {}
        for model in fams[0][frac]:
            row[model] = {m: float(sum(v["runs"] * v[frac][model][m] for v in fams) / total)
                          for m in fams[0][frac][model]}
        out[frac] = row
    return out


def write_model_card(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """``MODEL_CARD.md``: data, splits and held-out errors from the manifest."""
    td = manifest.get("training_data", {})
    real = td.get("real") or {}
    lines = ["# Model card: earlystop_predict accModels", "",
             f"Version {manifest.get('version')}; trained in "
             f"{manifest.get('train_seconds', '?')} s (seed {manifest.get('seed')}).", "",
             "## Data", "",
             f"- LCBench surrogate: {td.get('curves')} curves; trained on "
             f"{len(td.get('train_tasks', []))} tasks, early stopping and calibration on "
             f"{len(td.get('validation_tasks', []))}, held out "
             f"{', '.join(map(str, td.get('held_out_tasks', [])))}."]
    if real:
        folds = "; ".join(", ".join(f) for f in real.get("folds", []))
        lines.append(f"- Real corpus ({real.get('corpus')}, {real.get('runs')} runs of "
                     f"{len(real.get('families', []))} families): the bundled model trains on "
                     f"{real.get('train_runs')} runs of every family (each drawn "
                     f"{real.get('weight')}x), {real.get('early_stopping_runs')} held aside "
                     f"for early stopping. Cross-validation folds (a model trained without "
                     f"each group, in folds/): {folds}.")
        if real.get("note"):
            lines.append(f"  Note: {real['note']}.")
    if manifest.get("fine_tuned"):
        ft = manifest["fine_tuned"]
        lines.append(f"- Fine-tuned from {ft.get('base')} on {ft.get('train_runs')} runs of "
                     f"{ft.get('source')} ({ft.get('validation_runs')} for early stopping "
                     f"and calibration, {ft.get('test_runs')} held out).")
    lines.append(f"- {td.get('augmentation', '')}")

    def table(title: str, report: dict[str, Any], key_name: str,
              served: str = "served") -> None:
        # A report of the ensemble and its halves (train); else of the served model,
        # under "lstm", and LightGBM (fine-tuning, and manifests before the ensemble).
        halves = any("ensemble" in rows.get(f, {}) for rows in report.values()
                     for f in ("10%", "20%", "40%"))
        lines.extend(["", f"## {title}", "",
                      "Forecasting the last epoch: MAE in accuracy points, the ratio to "
                      "last value's MAE, and how often the 0.1-0.9 interval held the "
                      "outcome.", "",
                      f"| {key_name} | runs | observed | {served} MAE | x last value | "
                      + ("LSTM x last value | " if halves else "")
                      + "LightGBM x last value | coverage 0.1-0.9 |",
                      "|" + "---|" * (8 if halves else 7)])
        for name, rows in report.items():
            for frac in ("10%", "20%", "40%"):
                r = rows.get(frac)
                if not r:
                    continue
                last = r["last_value"]["mae"]
                top = r["ensemble"] if halves else r["lstm"]
                lines.append(
                    f"| {name} | {rows.get('runs', '')} | {frac} | {top['mae']:.2f} | "
                    f"{top['mae'] / last:.2f} | "
                    + (f"{r['lstm']['mae'] / last:.2f} | " if halves else "")
                    + f"{r['lightgbm']['mae'] / last:.2f} | {top['coverage80']:.0f} % |")

    weight = ensemble_weight(manifest)
    rule = (manifest.get("ensemble") or {}).get("rule", "the default share")
    lines.extend(["", f"Served: the LSTM and LightGBM averaged ({weight:.1f} : {1 - weight:.1f}, "
                  f"quantile by quantile) where the LSTM can serve, else LightGBM; the share: {rule}."])
    if manifest.get("held_out_families"):
        table("Real runs, each family scored by the fold model trained without it",
              manifest["held_out_families"], "family")
    if manifest.get("fine_tune_report"):
        table("The user's held-out runs, after fine-tuning", manifest["fine_tune_report"],
              "model")
        blend = manifest.get("blend") or {}
        weight = blend.get("weight", 1.0)
        how = "not blended" if weight >= 1.0 else \
            f"blended {weight:.1f} : {1 - weight:.1f} with the history model (boosters " \
            "grown on these runs alone)"
        lines.extend(["", f"After fine-tuning {how}: "
                      f"{blend.get('rule', 'no history model')}."])
    if manifest.get("held_out"):
        lcb = {"LCBench held-out tasks": {"runs": "", **manifest["held_out"]}}
        table("LCBench held-out tasks", lcb, "corpus")
    path = Path(directory) / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
