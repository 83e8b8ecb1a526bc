"""Forecast latency: one forecast per call (p50, p99) and batched throughput.

Run: python benchmarks/latency.py [--model DIR] [--calls 2000] [--repeat 5]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5, help="timed batched calls (median)")
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
    for name, fn in [("LSTM (ours, numpy)", lambda q: auto.forecast(q, 52)),
                     ("LightGBM (ours)", lambda q: lgbm.forecast(q, 52)),
                     ("pow3 fit (scipy)", lambda q: pow3_predict(q.series(q.metric), 52))]:
        ms = timed(fn, queries)
        rows.append([name, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                     1e3 / float(np.mean(ms))])
    print(f"{len(queries)} single forecasts, E in {prefix}, target 52, a machine of "
          f"{os.cpu_count()} CPUs")
    print_table("one forecast per call", ["method", "p50 (ms)", "p99 (ms)", "calls/s"], rows)
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
