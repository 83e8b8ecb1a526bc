"""A study choosing its own base: the LSTM and LightGBM blended by the study's finished runs.

Run: python benchmarks/study_base_blend.py [--contexts 5,10,20,40] [--draws 5] [--guard 0.95]

Measured, not served (the served base is now the equal ensemble, ``w`` = 0.5, for
every study; this measures what a weight the study chooses would add). Out of fold on the real corpus
(each family forecast by the fold model that never saw it, ``models/folds/``), the
LSTM and the LightGBM fallback err in different families (LightGBM is the better of
the two on images-cnn, lightning-sched, synthetic; the LSTM on the HF fine-tunes and
on LCBench). Here a study of K finished runs of a family (drawn at random, ``--draws``
times per family) chooses the weight ``w`` of ``w x LSTM + (1 - w) x LightGBM``
(0, 0.1 ... 1) of least absolute error on its runs' finals from 10-50 % of each run,
and serves it only where the weight, chosen again with each finished run left out,
scores at most ``--guard`` times the LSTM's error on the left-out runs (else ``w``
= 1: the LSTM alone, the served base before the ensemble). The family's other runs are scored at 20 % observed: MAE as
a multiple of last value's, per family and pooled (every run of every draw), without
and with the study correction (``StudyContext``'s guarded gain correction, fitted on
the context runs' forecasts of the base: the LSTM alone, or the study's blend), all on the same draws.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, lstm_alone, print_table  # noqa: E402
from real_curves import CORPUS  # noqa: E402

from earlystop_predict.forecast.artifacts import read_manifest  # noqa: E402
from earlystop_predict.forecast.lgbm import LGBMForecaster  # noqa: E402
from earlystop_predict.forecast.study import StudyContext  # noqa: E402
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.training.evaluate import completed  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
SCORED = FRACTIONS.index(0.2)
WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 1)


def at_fractions(runs: list, curves: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LSTM means, LightGBM means, last values), each (runs, FRACTIONS): the forecasts
    of :func:`prefix_curves` after ``max(1, round(frac x n))`` epochs (every run of the
    corpus has 10 or more, so that prefix is always among its n - 1)."""
    lstm_m = np.full((len(runs), len(FRACTIONS)), np.nan)
    lgbm_m, last = lstm_m.copy(), lstm_m.copy()
    for i, r in enumerate(runs):
        values = r.series(r.metric)
        for j, frac in enumerate(FRACTIONS):
            e = max(1, round(frac * r.n_epochs))
            lstm_m[i, j] = curves["lstm"][i][0][e - 1]
            lgbm_m[i, j] = curves["lgbm"][i][0][e - 1]
            last[i, j] = values[e - 1]
    return lstm_m, lgbm_m, last


def prefix_curves(runs: list, fam: np.ndarray) -> dict[str, list]:
    """Per run, per model: (mean, half 0.1-0.9 width) of the forecast of its end after
    each of its epochs 1 ... n-1 (what ``StudyContext`` fits its correction on)."""
    out: dict[str, list] = {"lstm": [None] * len(runs), "lgbm": [None] * len(runs)}
    plan = folds("auto")
    if not plan:
        raise SystemExit("no fold models in models/folds (python benchmarks/build_folds.py)")
    for fams, path in plan:
        models = {"lstm": lstm_alone(path),
                  "lgbm": LGBMForecaster.from_dir(path, read_manifest(path))}
        idx = [i for i in range(len(runs)) if fam[i] in fams]
        pre = [runs[i].truncated(e) for i in idx for e in range(1, runs[i].n_epochs)]
        ends = [runs[i].n_epochs for i in idx for _ in range(1, runs[i].n_epochs)]
        for name, model in models.items():
            fcs = model.forecast_many(pre, ends)
            at = 0
            for i in idx:
                n = runs[i].n_epochs - 1
                chunk = fcs[at:at + n]
                out[name][i] = (np.array([f.mean for f in chunk]),
                                np.array([(f.quantile(0.9) - f.quantile(0.1)) / 2
                                          for f in chunk]))
                at += n
    return out


def corrected(runs: list, ctx: np.ndarray, ev: np.ndarray, curves: dict, w: float,
              truth: np.ndarray) -> np.ndarray:
    """The eval runs' 20 % forecasts of the base ``w x LSTM + (1 - w) x LightGBM``,
    corrected by a ``StudyContext`` of the context runs' forecasts of that base."""
    def base(i: int) -> tuple[np.ndarray, np.ndarray]:
        (lm, lh), (gm, gh) = curves["lstm"][i], curves["lgbm"][i]
        return w * lm + (1 - w) * gm, w * lh + (1 - w) * gh

    study = StudyContext.from_curves(
        [(runs[i].series(runs[i].metric)[:-1], *base(i), truth[i]) for i in ctx])
    out = np.empty(len(ev))
    for j, i in enumerate(ev):
        n = runs[i].n_epochs
        e = min(max(1, round(0.2 * n)), n - 1)
        mean = base(i)[0][e - 1]
        out[j] = study.corrected_mean(e, n, float(runs[i].series(runs[i].metric)[e - 1]),
                                      float(mean))
    return out


def choose(err: np.ndarray, guard: float) -> float:
    """The served weight from ``err`` (weights, context runs): the weight of least mean
    error, where its leave-one-run-out error is at most ``guard`` x the LSTM's."""
    k = err.shape[1]
    held = []
    for i in range(k):
        rest = np.ones(k, bool)
        rest[i] = False
        held.append(err[int(np.argmin(err[:, rest].mean(axis=1))), i])
    if np.mean(held) <= guard * err[-1].mean():
        return float(WEIGHTS[int(np.argmin(err.mean(axis=1)))])
    return 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", default="5,10,20,40")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--guard", type=float, default=0.95)
    args = ap.parse_args()
    runs = completed(load_corpus(CORPUS))
    fam = np.array([family_of(r) for r in runs])
    truth = np.array([r.series(r.metric)[-1] for r in runs])
    curves = prefix_curves(runs, fam)
    lstm, lgbm, last = at_fractions(runs, curves)
    fams = sorted(set(fam.tolist()))
    rows = []
    for k in [int(x) for x in args.contexts.split(",")]:
        rng = np.random.default_rng(0)
        names = ("lstm", "lgbm", "blend", "lstm+study", "blend+study")
        sums = {name: {f: [0.0, 0.0] for f in fams} for name in names}
        served = 0
        for f in fams:
            idx = np.where(fam == f)[0]
            for _ in range(args.draws):
                ctx = rng.choice(idx, size=min(k, len(idx) - 1), replace=False)
                ev = np.setdiff1d(idx, ctx)
                err = np.stack([np.nanmean(np.abs(w * lstm[ctx] + (1 - w) * lgbm[ctx]
                                                  - truth[ctx, None]), axis=1)
                                for w in WEIGHTS])
                w = choose(err, args.guard)
                served += w < 1.0
                base = np.abs(last[ev, SCORED] - truth[ev]).sum()
                for name, point in (("lstm", lstm[ev, SCORED]), ("lgbm", lgbm[ev, SCORED]),
                                    ("blend", w * lstm[ev, SCORED]
                                     + (1 - w) * lgbm[ev, SCORED]),
                                    ("lstm+study", corrected(runs, ctx, ev, curves, 1.0, truth)),
                                    ("blend+study", corrected(runs, ctx, ev, curves, w, truth))):
                    sums[name][f][0] += np.abs(point - truth[ev]).sum()
                    sums[name][f][1] += base
        for name, label in (("lstm", "LSTM alone (today's base)"),
                            ("lgbm", "LightGBM alone"),
                            ("blend", f"study's weight, guard {args.guard:g} "
                                      f"(served in {served} of {len(fams) * args.draws})"),
                            ("lstm+study", "LSTM + the study correction (today's)"),
                            ("blend+study", "study's weight + the study correction")):
            per = [sums[name][f][0] / sums[name][f][1] for f in fams]
            pooled = sum(v[0] for v in sums[name].values()) / \
                sum(v[1] for v in sums[name].values())
            rows.append([f"{k} runs: {label}", *per, pooled])
    print_table("20 % observed, families out of fold: MAE / last value's MAE",
                ["context", *fams, "pooled"], rows)


if __name__ == "__main__":
    main()
