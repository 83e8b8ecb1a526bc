"""One run against patience: the gain rule and Keras/HF/Lightning EarlyStopping, replayed.

Run: python benchmarks/single_run.py [--model DIR] [--lcbench-limit 300] [--json FILE]

Each run of the real corpus (families out of fold: each family's forecasts come from
the fold model trained without it, ``models/folds/``; see ``build_folds.py``) and of
the held-out LCBench tasks is replayed alone, with no study and no threshold
(``replay(..., single_run=True)``). A rule stops the run; the run keeps its best
weights (Keras ``restore_best_weights=True``), so its regret is the points between its
best over all its epochs and its best up to the stop.

Rules: the gain rule at several ``min_delta``, alone (``gain-X-0``: the forecast alone
decides) and with ``gain_patience`` K (``gain-X-K``: the forecast sees no gain of X *and*
the run's best has stood K epochs; ``default`` is the callbacks' default), and
``patience-N`` = Keras ``EarlyStopping(patience=N)``. The frameworks'
defaults are in that list: Keras ``patience=0`` stops exactly as ``patience-1`` does,
HF ``EarlyStoppingCallback(early_stopping_patience=1)`` is ``patience-1``, Lightning
``EarlyStopping(patience=3)`` is ``patience-3``.

Prints per family and pooled (every run counted once): epochs saved, mean and p90
regret, and the done-when checks of issue 13, each beside its **hindsight ceiling**:
what a rule that knew every run's whole curve could reach at best (see
:func:`hindsight`), so a target above it is out of reach for any stopping rule.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import folds, model_dir, print_table  # noqa: E402
from real_curves import CORPUS  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.policy.stop import DEFAULT_GAIN_PATIENCE, DEFAULT_MIN_DELTA  # noqa: E402,E501
from earlystop_predict.records.corpus import load_corpus  # noqa: E402
from earlystop_predict.tools.replay import replay  # noqa: E402
from earlystop_predict.training.evaluate import completed  # noqa: E402
from earlystop_predict.training.real import family_of  # noqa: E402

#: The gain rule alone (``gain_patience`` 0: the forecast alone decides, the rule of the
#: previous release) and with the best's standing required (``gain-X-K``).
DELTAS = (0.005, 0.01, 0.02, 0.03, 0.05)
COMBINED = ((0.01, 3), (0.02, 3), (0.03, 3), (0.03, 5), (0.05, 3), (0.05, 5), (0.05, 7),
            (0.1, 5))
PATIENCE = (1, 3, 5, 10, 15, 20)
NAMES = {"patience-1": "patience 1 (Keras 0, HF default)",
         "patience-3": "patience 3 (Lightning default)",
         "default": f"default (gain, min_delta {DEFAULT_MIN_DELTA:g}, "
                    f"gain_patience {DEFAULT_GAIN_PATIENCE})"}


def rules() -> list[str]:
    return ["default", *[f"gain-{d:g}-0" for d in DELTAS],
            *[f"gain-{d:g}-{k}" for d, k in COMBINED], *[f"patience-{n}" for n in PATIENCE]]


def _pool(rows: list[dict]) -> dict[str, float]:
    """Saved and regret over every run of ``rows`` (replay details, one dict per run)."""
    regrets = np.array([r["regret"] for r in rows])
    return {"epochs_saved_pct": 100 * (1 - sum(r["trained"] for r in rows)
                                       / sum(r["total"] for r in rows)),
            "mean_regret": float(regrets.mean()), "p90_regret": float(np.percentile(regrets, 90)),
            "runs": len(rows)}


def replay_groups(groups: list[tuple[list, object]], names: list[str]) -> dict[str, dict]:
    """Per task: per rule the run details; each group replayed with its own model."""
    out: dict[str, dict] = {}
    for recs, model in groups:
        res = replay(recs, names, model, single_run=True, details=True)
        for task, per_rule in res.details.items():
            out[str(task)] = per_rule
    return out


def fold_plan(model: str) -> list[tuple[list[str], object]]:
    """(families, model directory) per fold: the folds the bundled manifest lists (their
    directories need not exist when ``load`` is False)."""
    from earlystop_predict.forecast.artifacts import read_manifest

    plan = folds(model)
    if plan:
        return plan
    listed = read_manifest(model_dir(model)).get("folds") or []
    return [(list(f["families"]), None) for f in listed]


def real_groups(model: str, load: bool = True) -> list[tuple[list, object]]:
    runs = completed(load_corpus(CORPUS))
    for r in runs:
        r.task = family_of(r)
    plan = fold_plan(model)
    if load and (not plan or plan[0][1] is None):
        print("NO FOLD MODELS (python benchmarks/build_folds.py): scoring in-sample")
        plan = [(sorted({r.task for r in runs}), model_dir(model))]
    return [([r for r in runs if r.task in fams], load_model(path) if load else None)
            for fams, path in plan]


def lcbench_groups(model: str, limit: int, load: bool = True) -> list[tuple[list, object]]:
    from earlystop_predict.training.lcbench import TEST_TASKS, lcbench_records

    recs = lcbench_records(TEST_TASKS, limit_per_task=limit)
    for r in recs:
        r.task = f"lcbench-{r.task}"
    return [(recs, load_model(model) if load else None)]


#: Lagrange multipliers (epochs per point of regret) for :func:`hindsight`'s bound.
LAMBDAS = np.geomspace(1e-3, 1e4, 400)


def hindsight(records: list) -> dict[str, np.ndarray]:
    """Per task of ``records``, an (L + 1, 2) array: per multiplier of :data:`LAMBDAS`,
    the summed epochs trained and points lost when every run stops where it would with
    hindsight (the epoch minimising ``epochs + lambda x regret`` over its whole curve);
    last row, the task's epochs and runs. The arrays add up: their sum is the bound
    of the runs pooled.

    By weak duality these rows bound every stopping rule, clairvoyant ones included:
    a rule whose runs train ``T`` epochs in all at a mean regret ``R`` over ``N`` runs
    has ``T >= min_e-sum(lambda) - lambda x N x R`` for every ``lambda``
    (:func:`ceiling_saved`, :func:`floor_regret`)."""
    from earlystop_predict.tools.replay import build_tasks

    tasks, _ = build_tasks(records)
    out = {}
    for t in tasks:
        width = int(t.ends.max())
        b = t.best_so_far[:, :width]
        reg = (t.kept[:, None] - b) if t.mode == "max" else (b - t.kept[:, None])
        reg = np.nan_to_num(reg * t.scale, nan=np.inf)
        reg[np.arange(width)[None, :] >= t.ends[:, None]] = np.inf  # past a run's end
        epochs = np.arange(1, width + 1)[None, :]
        costs = np.zeros((len(LAMBDAS) + 1, 2))
        for i, lam in enumerate(LAMBDAS):
            pick = np.argmin(epochs + lam * reg, axis=1)
            costs[i] = (pick + 1).sum(), reg[np.arange(len(pick)), pick].sum()
        costs[-1] = t.ends.sum(), len(t.records)
        out[t.name] = costs
    return out


def ceiling_saved(bound: np.ndarray, regret: float) -> float:
    """The most epochs saved (% pooled) any rule can reach at a mean regret <= regret."""
    rows, (total, runs) = bound[:-1], bound[-1]
    lagrangian = rows[:, 0] + LAMBDAS * rows[:, 1]
    trained = max(1.0 * runs, float(np.max(lagrangian - LAMBDAS * runs * regret)))
    return 100 * (1 - trained / total)


def floor_regret(bound: np.ndarray, saved_pct: float) -> float:
    """The least mean regret any rule can have while saving >= saved_pct % pooled."""
    rows, (total, runs) = bound[:-1], bound[-1]
    budget = total * (1 - saved_pct / 100)
    lagrangian = rows[:, 0] + LAMBDAS * rows[:, 1]
    return max(0.0, float(np.max((lagrangian - budget) / (LAMBDAS * runs))))


#: Mean regrets (points) at which :func:`frontier` states the ceiling, for the picture.
FRONTIER_REGRETS = np.concatenate([[0.0], np.geomspace(0.01, 40, 60)])


def frontier(bounds: dict[str, np.ndarray]) -> dict[str, list[list[float]]]:
    """Per task of ``bounds`` (:func:`hindsight`) and pooled (``"pooled"``): the
    hindsight ceiling as ``[mean regret, saved %]`` points (``plot_tradeoff.py`` draws
    it)."""
    def points(bound: np.ndarray) -> list[list[float]]:
        return [[float(x), ceiling_saved(bound, float(x))] for x in FRONTIER_REGRETS]

    out = {t: points(b) for t, b in sorted(bounds.items())}
    out["pooled"] = points(sum(bounds.values()))
    return out


def table(title: str, details: dict[str, dict], names: list[str]) -> dict[str, dict]:
    tasks = sorted(details)
    pooled = {n: _pool([row for t in tasks for row in details[t][n]]) for n in names}
    per = {t: {n: _pool(details[t][n]) for n in names} for t in tasks}
    header = ["rule", "pooled saved %", "pooled mean regret", "pooled p90 regret",
              *[f"{t} saved / regret" for t in tasks]]
    rows = []
    for n in names:
        p = pooled[n]
        cells: list[object] = [NAMES.get(n, n), p["epochs_saved_pct"], p["mean_regret"],
                               p["p90_regret"]]
        cells += [f"{per[t][n]['epochs_saved_pct']:.1f} / {per[t][n]['mean_regret']:.2f}"
                  for t in tasks]
        rows.append(cells)
    print_table(title, header, rows)
    return {"pooled": pooled, "per_task": per}


def checks(result: dict[str, dict], label: str, bound: np.ndarray) -> None:
    """Issue 13's single-run targets against patience 10 and the best patience setting,
    each beside the hindsight ceiling (``bound``: :func:`hindsight`'s, pooled)."""
    pooled, per = result["pooled"], result["per_task"]
    d, p10 = pooled["default"], pooled["patience-10"]

    def beats(a: dict, b: dict) -> bool:
        return a["epochs_saved_pct"] >= b["epochs_saved_pct"] and \
            a["mean_regret"] <= 0.5 * b["mean_regret"]

    fams = sum(beats(v["default"], v["patience-10"]) for v in per.values())
    print(f"\n{label}: default (min_delta {DEFAULT_MIN_DELTA:g}, gain_patience "
          f"{DEFAULT_GAIN_PATIENCE}) {d['epochs_saved_pct']:.1f} % "
          f"at {d['mean_regret']:.3f} vs patience 10 {p10['epochs_saved_pct']:.1f} % at "
          f"{p10['mean_regret']:.3f}: pooled {'PASS' if beats(d, p10) else 'FAIL'}; "
          f"families {fams}/{len(per)} (need {math.ceil(5 / 7 * len(per))}: 5 of 7)")
    floor = floor_regret(bound, p10["epochs_saved_pct"])
    print(f"  hindsight: at patience 10's {p10['epochs_saved_pct']:.1f} % saved, the least "
          f"mean regret any rule can have is {floor:.3f} "
          f"({floor / p10['mean_regret']:.2f}x patience 10's)")
    gains = [n for n in pooled if n.startswith("gain-") or n == "default"]
    for n in [x for x in pooled if x.startswith("patience-")]:
        pat = pooled[n]
        ok = [g for g in gains if pooled[g]["mean_regret"] <= pat["mean_regret"]]
        if not ok or pat["epochs_saved_pct"] <= 0:
            print(f"  {n}: no gain setting at its regret {pat['mean_regret']:.3f}")
            continue
        g = max(ok, key=lambda x: pooled[x]["epochs_saved_pct"])
        ratio = pooled[g]["epochs_saved_pct"] / pat["epochs_saved_pct"]
        top = ceiling_saved(bound, pat["mean_regret"])
        print(f"  at {n}'s regret {pat['mean_regret']:.3f}: {g} saves "
              f"{pooled[g]['epochs_saved_pct']:.1f} % vs {pat['epochs_saved_pct']:.1f} % "
              f"= {ratio:.2f}x ({'PASS' if ratio >= 1.5 else 'FAIL'} 1.5x); hindsight "
              f"ceiling {top:.1f} % = {top / pat['epochs_saved_pct']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--lcbench-limit", type=int, default=300,
                    help="runs per held-out LCBench task (0: skip LCBench)")
    ap.add_argument("--json", default=None, help="write the tables to this file")
    ap.add_argument("--no-real", action="store_true", help="skip the real families")
    args = ap.parse_args()
    names = rules()
    t0 = time.perf_counter()
    out = {}
    if not args.no_real:
        groups = real_groups(args.model)
        out["real"] = table("Single runs, real families out of fold",
                            replay_groups(groups, names), names)
        bounds = hindsight([r for g, _ in groups for r in g])
        checks(out["real"], "real families", sum(bounds.values()))
        out["real"]["hindsight"] = frontier(bounds)
    if args.lcbench_limit:
        groups = lcbench_groups(args.model, args.lcbench_limit)
        out["lcbench"] = table("Single runs, held-out LCBench tasks",
                               replay_groups(groups, names), names)
        bounds = hindsight([r for g, _ in groups for r in g])
        checks(out["lcbench"], "LCBench", sum(bounds.values()))
        out["lcbench"]["hindsight"] = frontier(bounds)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
