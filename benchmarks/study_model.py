"""The study model on real curves: a history model grown on a study's finished runs.

Run: python benchmarks/study_model.py [--contexts 20,40,80] [--seeds 3] [--fracs 0.2]

Each family of the real corpus (``models/corpus``) is scored with the fold model that
never saw it (``models/folds/``, ``build_folds.py``); without fold models (or with
``--model bundled``), the bundled model scores the families it never saw (in no fold
of its manifest: the five collected after it was trained). For each family, seed and
context size K, K runs of the family are drawn as a study's finished runs and the
family's other runs are forecast, from their first 20 % of epochs (``--fracs``), to
their final epoch:

* no context: the model alone (on every run of the family);
* correction: ``StudyContext``'s guarded gain correction from the K runs (what
  ``use_study=True`` served before the study model);
* study model: ``fit_study_model`` on the K runs (its weight and guard scored on
  held-out folds of them), blended with the correction where its guard lets it serve;
* unguarded: the same blend whatever the guard says (how much the guard saves).

MAE as a multiple of last value's MAE on the same runs (lower is better), per family
and pooled; the 0.1-0.9 coverage (%); and in how many of the draws the guard let the
study model serve.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, print_table  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.forecast.artifacts import bundled_dir, read_manifest  # noqa: E402
from earlystop_predict.forecast.study import StudyContext  # noqa: E402
from earlystop_predict.forecast.study_model import GUARD, fit_study_model  # noqa: E402
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.training.evaluate import completed  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "models" / "corpus" / "runs.jsonl.gz"


def _models(fams: set[str], which: str) -> tuple[dict[str, object], str]:
    """Each family's scoring model (one that never saw it) and a line saying which."""
    plan = folds("auto") if which == "auto" else []
    if plan:
        out = {f: load_model(path) for fam, path in plan for f in fam}
        said = "the fold model that never saw it"
    else:
        out, said = {}, "the bundled model (no fold models: only the families it never saw)"
    seen = {f for fold in read_manifest(bundled_dir()).get("folds") or [] for f in fold["families"]}
    bundled = load_model("auto")
    for f in sorted(fams - set(out) - seen):  # collected after the bundle: it never saw them
        out[f] = bundled
    return out, said


class Tally:
    """Errors, last value's errors and coverage of one row, per family."""

    def __init__(self) -> None:
        self.err: dict[str, list[float]] = {}
        self.base: dict[str, list[float]] = {}
        self.cov: list[bool] = []

    def add(self, fam: str, fcs, truth: np.ndarray, last: np.ndarray) -> None:
        mean = np.array([fc.mean for fc in fcs])
        self.err.setdefault(fam, []).extend(np.abs(mean - truth))
        self.base.setdefault(fam, []).extend(np.abs(last - truth))
        self.cov.extend(fc.quantiles["0.1"] <= t <= fc.quantiles["0.9"]
                        for fc, t in zip(fcs, truth, strict=True))

    def row(self, name: str, fams: list[str], served: list[bool]) -> list[object]:
        ratios = [float(np.sum(self.err[f]) / np.sum(self.base[f])) if f in self.err
                  else math.nan for f in fams]
        pooled = float(np.nanmean(ratios))  # every family weighs the same
        return [name, *ratios, pooled, 100 * float(np.mean(self.cov)),
                f"{sum(served)}/{len(served)}" if served else ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--contexts", default="20,40,80")
    ap.add_argument("--seeds", type=int, default=3, help="context draws per family and size")
    ap.add_argument("--fracs", default="0.2", help="observed fractions, comma-separated")
    ap.add_argument("--model", default="auto", choices=("auto", "bundled"),
                    help="auto: fold models where present; bundled: the bundled model only")
    ap.add_argument("--guard", type=float, default=GUARD, help="fit_study_model's guard")
    ap.add_argument("--families", default="", help="comma-separated (default: all scored)")
    args = ap.parse_args()
    t0 = time.time()
    runs = completed(load_corpus(args.corpus))
    by_fam: dict[str, list] = {}
    for r in runs:
        by_fam.setdefault(family_of(r), []).append(r)
    model_of, said = _models(set(by_fam), args.model)
    fams = sorted(f for f in model_of if not args.families or f in args.families.split(","))
    sizes = [int(k) for k in args.contexts.split(",")]
    fracs = [float(x) for x in args.fracs.split(",")]
    print(f"{sum(len(by_fam[f]) for f in fams)} completed real runs of {len(fams)} families, "
          f"each scored by {said}; {args.seeds} context draws per family and size; "
          f"guard {args.guard}")
    tallies: dict[tuple[float, str], Tally] = {}
    served: dict[str, list[bool]] = {}  # per row: whether the guard let it serve, per draw

    def tally(frac: float, name: str) -> Tally:
        return tallies.setdefault((frac, name), Tally())

    for fam in fams:
        model, fam_runs = model_of[fam], by_fam[fam]
        for frac in fracs:  # no context: every run of the family
            pre = [r.truncated(max(1, round(frac * r.n_epochs))) for r in fam_runs]
            truth = np.array([r.series(r.metric)[-1] for r in fam_runs])
            last = np.array([p.series(p.metric)[-1] for p in pre])
            tally(frac, "no context").add(fam, model.forecast_many(pre, [r.n_epochs for r in
                                                                         fam_runs]), truth, last)
        for k in sizes:
            if len(fam_runs) < k + 10:
                continue
            for seed in range(args.seeds):
                rng = np.random.default_rng([seed, k, len(fam)])
                pick = rng.permutation(len(fam_runs))
                ctx_runs = [fam_runs[i] for i in pick[:k]]
                test = [fam_runs[i] for i in pick[k:]]
                ctx = StudyContext(model, ctx_runs)
                sm, _ = fit_study_model(model, ctx_runs, guard=math.inf)
                serves = sm is not None and sm.error_ratio <= args.guard
                served.setdefault(f"study model, {k} runs", []).append(serves)
                for frac in fracs:
                    pre = [r.truncated(max(1, round(frac * r.n_epochs))) for r in test]
                    ends = [r.n_epochs for r in test]
                    truth = np.array([r.series(r.metric)[-1] for r in test])
                    last = np.array([p.series(p.metric)[-1] for p in pre])
                    corr = [ctx.apply(p, t, fc) for p, t, fc in
                            zip(pre, ends, model.forecast_many(pre, ends), strict=True)]
                    free = corr if sm is None else [sm.apply(p, t, fc) for p, t, fc in
                                                    zip(pre, ends, corr, strict=True)]
                    tally(frac, f"correction, {k} runs").add(fam, corr, truth, last)
                    tally(frac, f"study model, {k} runs").add(fam, free if serves else corr,
                                                              truth, last)
                    tally(frac, f"unguarded, {k} runs").add(fam, free, truth, last)
        print(f"  {fam}: done ({time.time() - t0:.0f} s)", flush=True)
    names = ["no context"] + [f"{what}, {k} runs" for k in sizes
                              for what in ("correction", "study model", "unguarded")]
    for frac in fracs:
        rows = [tallies[(frac, n)].row(n, fams, served.get(n, [])) for n in names
                if (frac, n) in tallies]
        print_table(f"{int(frac * 100)} % observed: MAE / last value's MAE",
                    ["context", *fams, "mean", "cov 0.1-0.9 (%)", "study model served"], rows)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
