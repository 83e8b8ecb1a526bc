"""Forecast accuracy on real learning curves: the collector's corpus (models/corpus).

Run: python benchmarks/real_curves.py [--model DIR] [--corpus PATH]

Every completed run of the corpus (none of them seen by the bundled models),
forecasting its final epoch from the first 10, 20 and 40 % of its epochs; per
family and overall, ours beside last value and a pow3 fit.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import pow3_predict, print_table  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.collect import load_corpus  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "models" / "corpus" / "runs.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--corpus", default=str(CORPUS))
    args = ap.parse_args()
    runs = [r for r in load_corpus(args.corpus)
            if r.extra.get("collect", {}).get("status") == "completed"
            and r.n_epochs == r.meta.get("max_epochs") and np.isfinite(r.series(r.metric)[-1])]
    model = load_model(args.model)
    print(f"{len(runs)} completed real runs from {args.corpus}")
    for frac in (0.1, 0.2, 0.4):
        prefixes = [r.truncated(max(1, round(frac * r.n_epochs))) for r in runs]
        truth = np.array([r.series(r.metric)[-1] for r in runs])
        last = np.array([p.series(p.metric)[-1] for p in prefixes])
        fcs = model.forecast_many(prefixes, [r.n_epochs for r in runs])
        mean = np.array([f.mean for f in fcs])
        inside = np.array([f.quantile(0.1) <= t <= f.quantile(0.9) for f, t in zip(fcs, truth,
                                                                                     strict=True)])
        pow3 = np.array([pow3_predict(p.series(p.metric), r.n_epochs)
                         for p, r in zip(prefixes, runs, strict=True)])
        family = np.array([r.extra["collect"]["family"] for r in runs])
        rows = []
        for name in [*sorted(set(family)), "all"]:
            sel = (family == name) if name != "all" else np.ones(len(runs), bool)
            sel &= np.isfinite(last)
            base = np.abs(last - truth)[sel].mean()
            rows.append([name, int(sel.sum()), 100 * np.abs(mean - truth)[sel].mean(),
                         np.abs(mean - truth)[sel].mean() / base,
                         np.abs(pow3 - truth)[sel].mean() / base, 100 * base,
                         100 * inside[sel].mean()])
        print_table(f"{int(frac * 100)} % observed", ["family", "runs", "ours MAE (pts)",
                    "ours / last value", "pow3 / last value", "last value MAE (pts)",
                    "cov80 (%)"], rows)


if __name__ == "__main__":
    main()
