"""Replay stopping policies over the real-curve corpus, families never seen.

Run: python benchmarks/replay_real.py [--model DIR] [--orders 20] [--runs-per-order 100]

Random search simulated on each family of the collector's corpus
(``models/corpus``): for ``--orders`` shuffled orders of ``--runs-per-order``
completed runs, each policy may stop runs early (see
:mod:`earlystop_predict.tools.replay`). The forecasting policy uses, for each family, the
cross-validation fold model trained without it (``OUTPUT/folds/``); Optuna's
median rule and Ray Tune's ASHA need no model. Each run's target is its own
planned last epoch. Prints epochs saved and regret (accuracy points) per family.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, model_dir, print_table  # noqa: E402
from real_curves import CORPUS  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.tools.replay import replay  # noqa: E402
from earlystop_predict.training.evaluate import completed  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402

POLICIES = ("incumbent", "median", "asha")
NAMES = {"incumbent": "incumbent (ours)", "median": "median (Optuna)", "asha": "ASHA (Ray Tune)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--runs-per-order", type=int, default=100)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--min-epochs", type=int, default=3)
    args = ap.parse_args()
    runs = completed(load_corpus(args.corpus))
    for r in runs:
        r.task = family_of(r)  # one study per family
    plan = folds(args.model)
    if not plan:
        print("no fold models next to the model (run `earlystop-predict train`): "
              "scoring the model in-sample")
        plan = [(sorted({r.task for r in runs}), model_dir(args.model))]
    per_family: dict[str, dict[str, dict[str, float]]] = {}
    for fams, path in plan:
        sub = [r for r in runs if r.task in fams]
        res = replay(sub, [*POLICIES, "none"], load_model(path), orders=args.orders,
                     runs_per_order=args.runs_per_order, confidence=args.confidence,
                     min_epochs=args.min_epochs)
        per_family.update(res.per_task)
    print(f"{len(runs)} completed real runs, {args.orders} orders x {args.runs_per_order} "
          f"runs per family, min_epochs {args.min_epochs}, confidence {args.confidence}")
    rows = []
    for fam in [*sorted(per_family), "mean"]:
        cells: list[object] = [fam]
        for p in POLICIES:
            if fam == "mean":
                saved = float(np.mean([v[p]["epochs_saved_pct"] for v in per_family.values()]))
                regret = float(np.mean([v[p]["mean_regret"] for v in per_family.values()]))
            else:
                saved = per_family[fam][p]["epochs_saved_pct"]
                regret = per_family[fam][p]["mean_regret"]
            cells += [saved, regret]
        rows.append(cells)
    header = ["family"]
    for p in POLICIES:
        header += [f"{NAMES[p]} saved %", f"{NAMES[p]} regret (pts)"]
    print_table("epochs saved and mean regret per family", header, rows)


if __name__ == "__main__":
    main()
