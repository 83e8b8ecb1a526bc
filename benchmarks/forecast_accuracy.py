"""Forecast accuracy on held-out LCBench tasks: ours against simple baselines.

Run: python benchmarks/forecast_accuracy.py [--model DIR] [--runs-per-task 300]

Forecasts the final epoch (52) from the first 10, 20 and 40 % of each curve of
the 6 tasks held out from training (whole tasks, never seen). Errors are in
accuracy points; Spearman is the mean within-task rank correlation of forecast
and outcome; cov80 is how often the 0.1-0.9 interval holds the outcome.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import pow3_predict, print_table  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.training.evaluate import (  # noqa: E402
    best_so_far_fn,
    evaluate,
    forecaster_fn,
    last_value_fn,
)
from earlystop_predict.training.lcbench import MAX_EPOCHS, TEST_TASKS, lcbench_records  # noqa: E402


def pow3_fn(records, target):  # noqa: ANN001, ANN201
    return np.array([pow3_predict(r.series(r.metric), target) for r in records]), None, None


def add_noise(records, n_val: int, seed: int = 0):  # noqa: ANN001, ANN201
    """Binomial noise of a validation set of ``n_val`` examples on val_accuracy."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        r2 = r.truncated(r.n_epochs)
        for row in r2.epochs:
            p = row["val_accuracy"]
            row["val_accuracy"] = float(rng.binomial(n_val, p) / n_val)
        out.append(r2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto", help="model directory (default: bundled)")
    ap.add_argument("--runs-per-task", type=int, default=300)
    ap.add_argument("--noise", type=int, default=0,
                   help="also add binomial noise of a validation set of this size to inputs")
    args = ap.parse_args()
    records = lcbench_records(TEST_TASKS, limit_per_task=args.runs_per_task)
    if args.noise:
        noisy = add_noise(records, args.noise)
        # Score against the clean curve's outcome: inputs noisy, truth clean.
        for clean, nz in zip(records, noisy, strict=False):
            nz.epochs[-1]["val_accuracy"] = clean.epochs[-1]["val_accuracy"]
        records = noisy
    auto = load_model(args.model if args.model != "auto" else "auto")
    lstm, lgbm = load_model("lstm"), load_model("lightgbm")
    if args.model != "auto":
        from earlystop_predict.forecast.artifacts import read_manifest
        from earlystop_predict.forecast.compose import StrictForecaster
        from earlystop_predict.forecast.lgbm import LGBMForecaster
        from earlystop_predict.forecast.lstm import LSTMForecaster

        manifest = read_manifest(args.model)
        lgbm = LGBMForecaster.from_dir(args.model, manifest)
        lstm = StrictForecaster(LSTMForecaster.from_dir(args.model, manifest))
    methods = {"ours (LSTM + LightGBM)": forecaster_fn(auto), "LSTM alone": forecaster_fn(lstm),
               "LightGBM alone": forecaster_fn(lgbm),
               "last value": last_value_fn, "best so far": best_so_far_fn, "pow3 fit": pow3_fn}
    print(f"{len(records)} runs from {len(TEST_TASKS)} held-out tasks, target epoch "
          f"{MAX_EPOCHS}" + (f", inputs with binomial noise n={args.noise}" if args.noise else ""))
    for frac in (0.1, 0.2, 0.4):
        e = max(1, int(round(frac * MAX_EPOCHS)))
        rows = []
        base = None
        for name, fn in methods.items():
            t0 = time.perf_counter()
            m = evaluate(fn, records, e, MAX_EPOCHS)
            dt = time.perf_counter() - t0
            if name == "last value":
                base = m["mae"]
            rows.append([name, m["mae"], m["rmse"], m["spearman"], m["coverage80"], dt])
        for row in rows:
            row.insert(2, row[1] / base if base else float("nan"))
        print_table(f"{int(frac * 100)} % observed (E={e} of {MAX_EPOCHS})",
                    ["method", "MAE (pts)", "MAE / last value", "RMSE (pts)", "Spearman",
                     "cov80 (%)", "seconds"], rows)


if __name__ == "__main__":
    main()
