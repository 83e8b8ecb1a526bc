"""Zero-epoch ranking (``earlystop-predict rank``): does the prior order configurations
before they train?

Run: python benchmarks/rank.py [--model DIR]

On the LCBench tasks held out of training (the bundled prior) and on each real
family scored by the prior of the fold model trained without it:
within-task Spearman between the zero-epoch forecast and the realized final
value, and the regret of training only the top 10 % the prior picks, beside a
random pick of the same size (the baseline of a search without a prior).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, print_table  # noqa: E402
from real_curves import CORPUS  # noqa: E402

from earlystop_predict.forecast.prior import load_prior  # noqa: E402
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.training.evaluate import _spearman, completed  # noqa: E402
from earlystop_predict.training.lcbench import TEST_TASKS, lcbench_records  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402


def score(groups: dict[str, list], prior, rng: np.random.Generator) -> list[list[object]]:  # noqa: ANN001
    rows = []
    for name, runs in groups.items():
        truth = np.array([r.series(r.metric)[-1] for r in runs])
        cfgs = [{"hparams": r.hparams, "meta": r.meta} for r in runs]
        mean = np.array([f.mean for f in prior.forecast_configs(cfgs, runs[0].last_epoch)]) \
            if len({r.last_epoch for r in runs}) == 1 else np.array([
                prior.forecast_configs([c], r.last_epoch)[0].mean for c, r in zip(cfgs, runs,
                                                                                  strict=True)])
        k = max(1, len(runs) // 10)
        best = truth.max()
        top = truth[np.argsort(-mean)[:k]].max()
        rand = np.mean([truth[rng.permutation(len(runs))[:k]].max() for _ in range(200)])
        rows.append([name, len(runs), _spearman(mean, truth), 100 * (best - top),
                     100 * (best - rand)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--corpus", default=str(CORPUS))
    args = ap.parse_args()
    prior = load_prior(args.model)
    rng = np.random.default_rng(0)
    groups: dict[str, list] = {}
    for r in lcbench_records(TEST_TASKS, limit_per_task=1000):
        groups.setdefault(f"LCBench {r.task}", []).append(r)
    rows = score(groups, prior, rng)
    real = completed(load_corpus(args.corpus))
    for fams, path in folds(args.model):
        fold_groups = {f: [r for r in real if family_of(r) == f] for f in fams}
        rows += score({k: v for k, v in fold_groups.items() if v}, load_prior(path), rng)
    print_table("zero-epoch forecast on held-out tasks and families",
                ["task / family", "configs", "Spearman (prior)",
                 "regret top 10 % by prior (pts)", "regret random 10 % (pts)"], rows)
    sp = [r[2] for r in rows]
    print(f"\nmean within-task Spearman {np.nanmean(sp):.3f} (random order: 0)")


if __name__ == "__main__":
    main()
