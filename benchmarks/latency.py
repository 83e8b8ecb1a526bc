"""Forecast latency: one forecast per call (p50, p99), per epoch of a growing run, and
batched throughput.

Run: python benchmarks/latency.py [--model DIR] [--calls 2000] [--repeat 5] [--runs 200]

The per-epoch table is the callbacks' case: one run forecast after each epoch, timed
at epoch 15 and epoch 95, with the LSTM's run cache (each call steps the new epoch)
beside the full pass over the whole sequence that every call made before it.

Beside ours, in the same run, a scipy pow3 curve fit (the usual parametric
extrapolation) forecasting the same runs, so the ratio holds on a noisy machine.
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
from earlystop_predict.training.lcbench import TEST_TASKS, lcbench_records  # noqa: E402


def timed(fn, queries) -> np.ndarray:  # noqa: ANN001
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        fn(q)
        out[i] = time.perf_counter() - t0
    return out * 1e3


def growing_runs(n_runs: int, epochs: int = 100) -> list[list[dict]]:
    """Epoch rows of ``n_runs`` synthetic runs (rising, noisy), ``epochs`` each."""
    rng = np.random.default_rng(1)
    runs = []
    for _ in range(n_runs):
        tau, top = rng.uniform(3, 30), rng.uniform(0.5, 0.95)
        acc = np.clip(top * (1 - np.exp(-np.arange(1, epochs + 1) / tau))
                      + rng.normal(0, 0.01, epochs), 0, 1)
        runs.append([{"epoch": e + 1, "val_accuracy": float(a), "val_loss": float(2 - 2 * a),
                      "train_loss": float(2.1 - 2 * a)} for e, a in enumerate(acc)])
    return runs


def per_epoch_rows(model, runs: list[list[dict]], at: tuple[int, ...] = (15, 95),  # noqa: ANN001
                   target: int = 100) -> list[list]:
    """Per-call cost (ms, median over runs) of forecasting each run after epochs ``at``
    as it grows, with the run cache and with the full pass (cache off)."""
    from earlystop_predict.forecast.lstm import LSTMForecaster
    from earlystop_predict.records.record import RunRecord

    lstm = getattr(model, "primary", model)
    if not isinstance(lstm, LSTMForecaster):
        return []
    variants = [("LSTM, run cache (ours)", lstm),
                ("LSTM, full pass each call (before)", LSTMForecaster(lstm.weights, cache_size=0))]
    rows = []
    for name, fc in variants:
        times = {e: [] for e in at}
        for i, rows_ in enumerate(runs):
            rec = RunRecord(run_id=f"grow-{i}", hparams={"learning_rate": 0.01},
                            meta={"max_epochs": target})
            for row in rows_[:max(at)]:
                rec.epochs.append(row)
                t0 = time.perf_counter()
                fc.forecast(rec, target)
                dt = time.perf_counter() - t0
                if len(rec.epochs) in times:
                    times[len(rec.epochs)].append(dt * 1e3)
        med = [float(np.median(times[e])) for e in at]
        rows.append([name, *med, med[-1] / med[0]])
    return rows


def load_rows(repeat: int = 3) -> list[list]:
    """Seconds (best of ``repeat``) to load the bundled LightGBM file: LightGBM's own
    parse of the texts as written (tree_sizes, parallel: what loading did before, and
    what a damaged tree aborts), the text check, LightGBM's parse of the checked texts,
    and the whole ``load_model()``."""
    import gzip

    import lightgbm as lgb

    from earlystop_predict.forecast.artifacts import bundled_dir, check_lightgbm_text
    from earlystop_predict.forecast.lgbm import SEPARATOR

    text = gzip.decompress((bundled_dir() / "lgbm.txt.gz").read_bytes()).decode()
    models = [c.partition("\n")[2] for c in text.split(SEPARATOR)[1:]]
    checked = [check_lightgbm_text(m)[0] for m in models]

    def best(fn) -> float:  # noqa: ANN001
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    return [["LightGBM parse, texts as written (before)",
             best(lambda: [lgb.Booster(model_str=m) for m in models])],
            ["text check (ours)", best(lambda: [check_lightgbm_text(m) for m in models])],
            ["LightGBM parse, checked texts (ours)",
             best(lambda: [lgb.Booster(model_str=m) for m in checked])],
            ["load_model() in all (ours)", best(load_model)]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5, help="timed batched calls (median)")
    ap.add_argument("--runs", type=int, default=200, help="runs grown epoch by epoch")
    args = ap.parse_args()
    full = lcbench_records(TEST_TASKS, limit_per_task=max(1, args.calls // len(TEST_TASKS)))
    rng = np.random.default_rng(0)
    prefix = [5, 10, 21]
    queries = [r.truncated(int(rng.choice(prefix))) for r in full][: args.calls]
    auto = load_model(args.model)
    lgbm = load_model("lightgbm") if args.model == "auto" else None
    if lgbm is None:
        from earlystop_predict.forecast.artifacts import read_manifest
        from earlystop_predict.forecast.lgbm import LGBMForecaster

        lgbm = LGBMForecaster.from_dir(args.model, read_manifest(args.model))
    for q in queries[:50]:  # warm-up
        auto.forecast(q, 52)
        lgbm.forecast(q, 52)
    rows = []
    lstm = getattr(auto, "primary", None)
    if lstm is not None and hasattr(lstm, "cache"):
        lstm.cache.clear()  # each query a run not seen before: no cached state helps
    for name, fn in [("LSTM (ours, numpy)", lambda q: auto.forecast(q, 52)),
                     ("LightGBM (ours)", lambda q: lgbm.forecast(q, 52)),
                     ("pow3 fit (scipy)", lambda q: pow3_predict(q.series(q.metric), 52))]:
        ms = timed(fn, queries)
        rows.append([name, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                     1e3 / float(np.mean(ms))])
    print(f"{len(queries)} single forecasts, E in {prefix}, target 52, a machine of "
          f"{os.cpu_count()} CPUs")
    print_table("one forecast per call", ["method", "p50 (ms)", "p99 (ms)", "calls/s"], rows)
    grow = per_epoch_rows(auto, growing_runs(args.runs))
    if grow:
        print(f"\n{args.runs} runs forecast after every epoch (target 100): the call after "
              "epoch 15 and after epoch 95")
        print_table("one run, per epoch", ["method", "E=15 (ms)", "E=95 (ms)", "E95 / E15"],
                    grow)
    print("\nloading the bundled model directory (best of 3)")
    print_table("load time", ["step", "seconds"], load_rows())
    batch = [queries[i % len(queries)] for i in range(args.batch)]
    brows = []
    for name, model, reps in [("LSTM (ours, numpy)", auto, args.repeat),
                              ("LightGBM (ours)", lgbm, 1)]:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model.forecast_many(batch, 52)
            times.append(time.perf_counter() - t0)
        dt = float(np.median(times))
        brows.append([name, len(batch), reps, dt, len(batch) / dt, len(batch) / max(times)])
    print_table("batched forecast_many", ["method", "forecasts", "calls", "median seconds",
                                          "forecasts/s (median)", "forecasts/s (slowest)"],
                brows)


if __name__ == "__main__":
    main()
