"""How low can the held-out LCBench error go? Specialists fitted to the exact query.

Run: python benchmarks/ceiling.py [--model DIR] [--runs-per-task 300] [--train-lstm]
(``--train-lstm`` needs torch: ``pip install -e '.[train]'``)

The accuracy benchmark (``forecast_accuracy.py``) forecasts the final epoch (52)
of the 6 held-out LCBench tasks from their first 5 and 10 epochs. The bundled
LSTM answers every E, M and horizon, noisy or not, real runs as well. This
script asks what a model built for this one query alone would reach: LightGBM
boosters fitted directly to predict the gain from epoch E to epoch 52 (L1 loss,
the benchmark's metric) from the raw E observed accuracies and losses and the
7 hyperparameters, on the clean curves of the training tasks only, early
stopped on the validation tasks; then the same refitted on training plus
validation tasks (20 tasks, more task variety). With ``--train-lstm``, also an
LSTM of the bundled shape trained on the training tasks' curves as they are.
They are scored on the same runs as the bundled LSTM, side by side.

If a specialist that cannot be used for anything else does not reach a target
on the held-out tasks, the limit is what the first epochs and hyperparameters
say about an unseen task, not the general model.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import model_dir, print_table  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.training.lcbench import (  # noqa: E402
    MAX_EPOCHS,
    TEST_TASKS,
    VAL_TASKS,
    load_lcbench,
    train_tasks,
)

OBSERVED = ((10, 5), (20, 10))  # (% observed, epochs of 52), as forecast_accuracy.py


def features(acc: np.ndarray, loss: np.ndarray, hparams: np.ndarray, e: int) -> np.ndarray:
    """Raw first ``e`` accuracies and losses, their gap to the last, log hparams."""
    a, lo = acc[:, :e].astype(np.float64), loss[:, :e].astype(np.float64)
    return np.hstack([a, lo, a - a[:, -1:], np.log(np.abs(hparams) + 1e-8)])


def fit_gain(x: np.ndarray, y: np.ndarray, *, eval_set: tuple[np.ndarray, np.ndarray] | None,
             rounds: int) -> object:
    """LightGBM with L1 loss on the gain; early stopped on ``eval_set`` when given."""
    import lightgbm as lgb

    model = lgb.LGBMRegressor(objective="l1", n_estimators=rounds, learning_rate=0.03,
                              num_leaves=31, min_child_samples=50, subsample=0.8,
                              subsample_freq=1, colsample_bytree=0.8, verbose=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if eval_set is None:
            model.fit(x, y)
        else:
            model.fit(x, y, eval_set=[eval_set],
                      callbacks=[lgb.early_stopping(100, verbose=False)])
    return model


def clean_lstm_forecasts(data, test: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Means (runs, 52) forecasting epoch 52 from every E (column E - 1), by an LSTM of the bundled
    shape trained on the training tasks' un-augmented curves (early stopped on the
    validation tasks)."""
    from earlystop_predict.training import lstm_train
    from earlystop_predict.training.data import LCBenchCurves, sample_batch

    class Clean(LCBenchCurves):
        def sample(self, rows, rng, *, augment=True):  # noqa: ANN001, ANN202, ARG002
            return sample_batch(self.data, self.static, rows, rng, augment=False)

    source = Clean(data)
    fit = np.where(np.isin(data.task_id, train_tasks(data)))[0]
    val = np.where(np.isin(data.task_id, VAL_TASKS))[0]
    net, _ = lstm_train.train_lstm([(source, fit)], [(source, val[::5])], epochs=20)
    out = [lstm_train.predict_positions(net, pb)[0] for pb, _ in
           lstm_train.end_positions(source, test)]
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto", help="model directory (default: bundled)")
    ap.add_argument("--runs-per-task", type=int, default=300,
                    help="held-out runs per task scored, the first ones (default 300)")
    ap.add_argument("--train-lstm", action="store_true",
                    help="also train (torch, ~2 min) an LSTM of the bundled shape on the "
                         "training tasks' curves as they are: no noise, no time warp, no "
                         "real runs; scored raw (no calibration or shrinkage)")
    args = ap.parse_args()

    data = load_lcbench()
    fit = np.isin(data.task_id, train_tasks(data))
    val = np.isin(data.task_id, VAL_TASKS)
    test = np.concatenate([np.where(data.task_id == t)[0][:args.runs_per_task]
                           for t in TEST_TASKS])
    final = data.acc[:, MAX_EPOCHS - 1].astype(np.float64)
    model = load_model(model_dir(args.model))
    records = [data.record(int(i)) for i in test]

    rows = []
    clean_lstm = clean_lstm_forecasts(data, test) if args.train_lstm else None
    for pct, e in OBSERVED:
        x = features(data.acc, data.loss, data.hparams, e)
        last = data.acc[:, e - 1].astype(np.float64)
        gain = final - last
        base = np.abs(last[test] - final[test]).mean()
        alone = fit_gain(x[fit], gain[fit], eval_set=(x[val], gain[val]), rounds=3000)
        more = fit_gain(x[fit | val], gain[fit | val], eval_set=None,
                        rounds=max(alone.best_iteration_ or 800, 100))
        ours = np.array([f.mean for f in
                         model.forecast_many([r.truncated(e) for r in records], MAX_EPOCHS)])

        def ratio(pred: np.ndarray, base: float = base) -> float:
            return float(np.abs(pred - final[test]).mean() / base)

        row = [f"{pct} % (E={e})", ratio(ours), ratio(last[test] + alone.predict(x[test])),
               ratio(last[test] + more.predict(x[test]))]
        if clean_lstm is not None:
            row.append(ratio(clean_lstm[:, e - 1]))
        rows.append([*row, 1.0])
    print(f"{len(test)} runs from {len(TEST_TASKS)} held-out tasks, target epoch {MAX_EPOCHS}; "
          "MAE as a multiple of last value's")
    header = ["observed", "LSTM (ours, bundled)", "LightGBM specialist, 17 train tasks",
              "LightGBM specialist, 20 tasks"]
    if clean_lstm is not None:
        header.append("LSTM on clean LCBench only")
    print_table("General LSTM against specialists fitted to this query alone",
                [*header, "last value"], rows)


if __name__ == "__main__":
    main()
