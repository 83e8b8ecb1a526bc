"""Forecast accuracy on real learning curves: the collector's corpus (models/corpus).

Run: python benchmarks/real_curves.py [--model DIR] [--corpus PATH] [--in-sample]

Each family is scored with the cross-validation fold model that was trained
without it (``OUTPUT/folds/`` written by ``earlystop-predict train``): whole
families held out, never runs. Each completed run's final epoch is forecast from
the first 10, 20 and 40 % of its epochs; ours (the served ensemble: the LSTM and
LightGBM averaged) beside each half alone, last value and a pow3 fit. Each is scored
by its mean; the LSTM also by its median (q0.5: the point an absolute error is least
for), as LightGBM's half of the ensemble's mean is. ``--in-sample`` scores the bundled
model itself on every family (which it was trained on) instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, lstm_alone, model_dir, pow3_predict, print_table  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.forecast.artifacts import read_manifest  # noqa: E402
from earlystop_predict.forecast.lgbm import LGBMForecaster  # noqa: E402
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.training.evaluate import completed  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "models" / "corpus" / "runs.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--in-sample", action="store_true")
    args = ap.parse_args()
    runs = completed(load_corpus(args.corpus))
    family = np.array([family_of(r) for r in runs])
    plan = folds(args.model)
    if args.in_sample or not plan:
        if not args.in_sample:
            print("no fold models next to the model (run `earlystop-predict train`): "
                  "scoring the model in-sample")
        plan = [(sorted(set(family.tolist())), model_dir(args.model))]
    models = {}
    for fams, path in plan:
        lgbm = LGBMForecaster.from_dir(path, read_manifest(path))
        for f in fams:
            models[f] = (load_model(path), lstm_alone(path), lgbm)
    keep = np.array([f in models for f in family])
    runs = [r for r, k in zip(runs, keep, strict=True) if k]
    family = family[keep]
    print(f"{len(runs)} completed real runs from {args.corpus}; "
          + ("in-sample" if args.in_sample else "each family scored by a model trained "
             "without it"))
    for frac in (0.1, 0.2, 0.4):
        prefixes = [r.truncated(max(1, round(frac * r.n_epochs))) for r in runs]
        truth = np.array([r.series(r.metric)[-1] for r in runs])
        last = np.array([p.series(p.metric)[-1] for p in prefixes])
        ours, mean, med, lg = (np.empty(len(runs)) for _ in range(4))
        inside, inside_lstm = np.empty(len(runs), dtype=bool), np.empty(len(runs), dtype=bool)
        for f, (model, lstm, lgbm) in models.items():
            idx = np.where(family == f)[0]
            ps, ends = [prefixes[i] for i in idx], [runs[i].n_epochs for i in idx]
            fcs = model.forecast_many(ps, ends)
            ours[idx] = [fc.mean for fc in fcs]
            inside[idx] = [fc.quantile(0.1) <= truth[i] <= fc.quantile(0.9)
                           for fc, i in zip(fcs, idx, strict=True)]
            alone = lstm.forecast_many(ps, ends)  # where it cannot serve, LightGBM
            mean[idx] = [fc.mean for fc in alone]
            med[idx] = [fc.quantile(0.5) for fc in alone]
            inside_lstm[idx] = [fc.quantile(0.1) <= truth[i] <= fc.quantile(0.9)
                                for fc, i in zip(alone, idx, strict=True)]
            lg[idx] = [fc.mean for fc in lgbm.forecast_many(ps, ends)]
        pow3 = np.array([pow3_predict(p.series(p.metric), r.n_epochs)
                         for p, r in zip(prefixes, runs, strict=True)])
        rows = []
        for name in [*sorted(set(family.tolist())), "all"]:
            sel = (family == name) if name != "all" else np.ones(len(runs), bool)
            sel &= np.isfinite(last)
            base = np.abs(last - truth)[sel].mean()
            rows.append([name, int(sel.sum()), 100 * np.abs(ours - truth)[sel].mean(),
                         np.abs(ours - truth)[sel].mean() / base,
                         np.abs(mean - truth)[sel].mean() / base,
                         np.abs(med - truth)[sel].mean() / base,
                         np.abs(lg - truth)[sel].mean() / base,
                         np.abs(pow3 - truth)[sel].mean() / base, 100 * base,
                         100 * inside[sel].mean(), 100 * inside_lstm[sel].mean()])
        print_table(f"{int(frac * 100)} % observed", ["family", "runs", "ours MAE (pts)",
                    "ours / last value", "LSTM / last value", "LSTM median / last value",
                    "LightGBM / last value", "pow3 / last value",
                    "last value MAE (pts)", "ours cov80 (%)", "LSTM cov80 (%)"], rows)


if __name__ == "__main__":
    main()
