"""Replay stopping policies over the held-out LCBench tasks.

Simulates random search on the six held-out LCBench tasks
(``earlystop_predict.training.lcbench.TEST_TASKS``, never seen in training): for
``--orders`` shuffled orders of ``--runs-per-order`` runs per task, each policy
may stop runs early. Prints epochs saved, regret (accuracy points) and stopped
runs per policy, overall and per task, and checks the target: the incumbent
policy saves >= 80% of epochs with mean regret <= 0.3 points, and beats the
median pruner (Optuna's) and ASHA (Ray Tune's) on both.

Usage:
    .venv/bin/python benchmarks/replay_lcbench.py --runs-per-order 100 --orders 20
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the machine is shared: one core per process

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.errors import EarlystopPredictError  # noqa: E402
from earlystop_predict.tools.replay import POLICIES, replay  # noqa: E402
from earlystop_predict.training.lcbench import TEST_TASKS, lcbench_records  # noqa: E402

TARGET_SAVED_PCT = 80.0
TARGET_REGRET = 0.3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-per-task", type=int, default=300,
                        help="runs loaded per held-out task (default 300; 1000 = all)")
    parser.add_argument("--orders", type=int, default=20, help="orders per task (default 20)")
    parser.add_argument("--runs-per-order", type=int, default=100,
                        help="runs drawn per order (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the orders (default 0)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="StopPolicy confidence (default 0.95)")
    parser.add_argument("--min-epochs", type=int, default=3,
                        help="first epoch a policy may stop at (default 3)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="threshold policy bar (default each task's median final)")
    parser.add_argument("--model", default="auto",
                        help="auto | lstm | lightgbm | model directory (default auto)")
    parser.add_argument("--policy", action="append", choices=POLICIES, default=None,
                        help="policies to replay, repeatable (default all)")
    parser.add_argument("--json", default=None, help="also write the full result to this file")
    args = parser.parse_args()

    try:
        model = load_model(args.model)
    except (EarlystopPredictError, ImportError) as exc:
        print(f"cannot load the model {args.model!r}: {type(exc).__name__}: {exc}\n"
              "train it first (models/manifest.json), or pass --model DIR", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    records = lcbench_records(TEST_TASKS, limit_per_task=args.limit_per_task)
    load_s = time.perf_counter() - t0
    policies = args.policy or list(POLICIES)
    result = replay(records, policies, model, orders=args.orders,
                    runs_per_order=args.runs_per_order, seed=args.seed,
                    confidence=args.confidence, min_epochs=args.min_epochs,
                    threshold=args.threshold)
    info = result.info
    print(f"LCBench held-out tasks {', '.join(map(str, TEST_TASKS))}: {info['runs']} runs "
          f"({args.limit_per_task} per task), {args.orders} orders x {args.runs_per_order} "
          f"runs per task, target epoch 52, min_epochs {args.min_epochs}, "
          f"confidence {args.confidence}, model {args.model!r}")
    print(f"threshold policy bar: "
          f"{args.threshold if args.threshold is not None else 'median final of each task'}")
    print()
    print(result.table(per_task=True))
    print()
    print(f"{info['forecasts']} forecasts ({', '.join(info['forecast_models'])}) in "
          f"{info['forecast_s']:.1f} s ({1e6 * info['forecast_s'] / max(info['forecasts'], 1):.0f}"
          f" us each); {info['decide_calls']} StopPolicy decisions; simulation "
          f"{info['simulate_s']:.1f} s; data load {load_s:.1f} s")
    if "incumbent" in policies:
        inc = result.summary["incumbent"]
        ok_saved = inc["epochs_saved_pct"] >= TARGET_SAVED_PCT
        ok_regret = inc["mean_regret"] <= TARGET_REGRET
        print(f"target incumbent: epochs saved {inc['epochs_saved_pct']:.1f}% >= "
              f"{TARGET_SAVED_PCT:.0f}%: {'PASS' if ok_saved else 'FAIL'}; mean regret "
              f"{inc['mean_regret']:.3f} <= {TARGET_REGRET} pts: "
              f"{'PASS' if ok_regret else 'FAIL'}")
        for rival in ("median", "asha"):
            if rival not in policies:
                continue
            other = result.summary[rival]
            better = (inc["epochs_saved_pct"] > other["epochs_saved_pct"]
                      and inc["mean_regret"] <= other["mean_regret"])
            print(f"incumbent vs {rival}: saved {inc['epochs_saved_pct']:.1f}% vs "
                  f"{other['epochs_saved_pct']:.1f}%, regret {inc['mean_regret']:.3f} vs "
                  f"{other['mean_regret']:.3f}: {'PASS' if better else 'FAIL'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
