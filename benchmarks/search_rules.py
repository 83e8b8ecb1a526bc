"""A search against ASHA: the default study rule and the pruners users already have.

Run: python benchmarks/search_rules.py [--orders 20] [--runs-per-order 100]
     [--patient-orders 5] [--wilcoxon-orders 5] [--lcbench-limit 300] [--json FILE]

Random search replayed on each family of the real corpus (forecasts from the fold
model that never saw the family, ``models/folds/``; see ``build_folds.py``) and on
the held-out LCBench tasks (``replay(...)``, search mode): ``--orders`` shuffled
orders of ``--runs-per-order`` runs; each run yields its best value up to its stop.

Rules: ``default`` (what the callbacks do in a study with their defaults: ``keep_top``
0.15, a run in the best 15 % of what the study's earlier runs had reached by the same
epoch is not stopped; ``flat_delta`` 0.05, a run within 5 points of its first value is
judged by ASHA's rungs, not its forecast; ``climb_credit`` 0.05), ``default-study``
(the same, with each run's forecasts corrected by the runs that finished before it, as
the callbacks do with a ledger), ``previous`` (the previous release's default: no
``flat_delta``, no ``climb_credit``), ``keep-top-0`` (the default without ``keep_top``),
``keep-top-0.25`` (the default with ``keep_top=0.25``, what ASHA keeps), the
incumbent rule alone, Optuna's ``MedianPruner`` and Ray Tune's ``ASHAScheduler``
(re-implemented in replay and checked against the libraries in the tests), and,
run through the real Optuna library on the first ``--optuna-orders`` orders of each
family (the same orders; Optuna is slow per call), ``WilcoxonPruner()`` (on
``--wilcoxon-orders``) and
``PatientPruner(MedianPruner(5, 2), patience=3)`` (``--patient-orders``). Ray Tune's
HyperBand is its asynchronous one, ``AsyncHyperBandScheduler(brackets=3)`` (re-implemented
in replay, checked against Ray's own brackets in the tests); the synchronous
``HyperBandScheduler`` pauses a trial at its bracket's milestone until the bracket's other
trials report there, so its outcome depends on how many trials run at once, which a
one-after-the-other replay does not have.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402
from single_run import lcbench_groups, real_groups  # noqa: E402

from earlystop_predict.tools.replay import _finish, _summarise, build_tasks, replay  # noqa: E402

RULES = ("default", "default-study", "previous", "keep-top-0", "keep-top-0.25", "incumbent",
         "median",
         "asha", "hyperband", "none")
NAMES = {"default": "default (ours)",
         "default-study": "default, study-aware forecasts (ours)",
         "previous": "previous default (ours)",
         "keep-top-0": "default without keep_top (ours)",
         "keep-top-0.25": "default + keep_top 0.25 (ours)",
         "incumbent": "incumbent only",
         "median": "median (Optuna)", "asha": "ASHA (Ray Tune)",
         "hyperband": "async HyperBand (Ray Tune)",
         "wilcoxon": "Wilcoxon (Optuna)", "patient": "Patient(Median, 3) (Optuna)"}


def _optuna_stops(values: list[np.ndarray], ends: list[int], pruner_name: str,
                  mode: str) -> dict[int, int]:
    """Stop epochs of one order's runs under a real Optuna pruner (ask/tell)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if pruner_name == "wilcoxon":
        pruner = optuna.pruners.WilcoxonPruner()
    else:
        pruner = optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2), patience=3)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                pruner=pruner)
    stops: dict[int, int] = {}
    for i, (v, end) in enumerate(zip(values, ends, strict=True)):
        trial = study.ask()
        for e in range(1, end + 1):
            if np.isfinite(v[e - 1]):
                trial.report(float(v[e - 1]), e)
            if e < end and trial.should_prune():
                stops[i] = e
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, float(np.nanmax(v[:end])) if mode == "max"
                       else float(np.nanmin(v[:end])))
    return stops


def optuna_rules(recs: list, res, counts: dict[str, int]) -> dict[str, dict[str, dict]]:
    """Per task, WilcoxonPruner and PatientPruner on the first orders replay used
    (``counts``: orders per pruner)."""
    tasks, _ = build_tasks(recs)
    out: dict[str, dict[str, dict]] = {}
    for task in tasks:
        out[task.name] = {}
        for name, n_orders in counts.items():
            if not n_orders:
                continue
            orders = [np.asarray(d["order"]) for d in res.details[task.name]["none"][:n_orders]]
            results = []
            for order in orders:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = _optuna_stops([task.values[int(r)] for r in order],
                                        [int(task.ends[int(r)]) for r in order], name,
                                        task.mode)
                results.append(_finish(task, order, {int(order[i]): s
                                                      for i, s in got.items()}))
            out[task.name][name] = _summarise(results)
    return out


def run_groups(groups: list, args: argparse.Namespace, counts: dict[str, int],
               cache: str | None = None) -> dict[str, dict[str, dict]]:
    """Replay each group with its model; the Optuna pruners (no model: the same whatever
    the forecaster) are read from ``cache`` when it exists, else run and written there."""
    per: dict[str, dict[str, dict]] = {}
    cached = json.loads(open(cache, encoding="utf-8").read()) \
        if cache and os.path.exists(cache) else None
    fresh: dict[str, dict[str, dict]] = {}
    for recs, model in groups:
        rules = RULES if model is not None else ("none",)
        res = replay(recs, rules, model, orders=args.orders,
                     runs_per_order=args.runs_per_order, details=any(counts.values()))
        for task, rows in res.per_task.items():
            per[task] = dict(rows)
        if cached is not None:
            for task in res.per_task:
                per[task].update(cached.get(task, {}))
        elif any(counts.values()):
            for task, rows in optuna_rules(recs, res, counts).items():
                per[task].update(rows)
                fresh[task] = rows
    if cache and cached is None:
        with open(cache, "w", encoding="utf-8") as fh:
            json.dump(fresh, fh, indent=1)
    return per


def table(title: str, per: dict[str, dict[str, dict]]) -> dict[str, dict]:
    rules = [r for r in (*RULES, "patient", "wilcoxon")
             if all(r in v for v in per.values())]
    rules = [r for r in rules if r != "none"]
    mean = {r: {"epochs_saved_pct": float(np.mean([v[r]["epochs_saved_pct"]
                                                   for v in per.values()])),
                "mean_regret": float(np.mean([v[r]["mean_regret"] for v in per.values()])),
                "p90_regret": float(np.mean([v[r]["p90_regret"] for v in per.values()]))}
            for r in rules}
    header = ["family", *[f"{NAMES[r]} saved / regret" for r in rules]]
    rows = [[t, *[f"{per[t][r]['epochs_saved_pct']:.1f} % / {per[t][r]['mean_regret']:.2f}"
                  for r in rules]] for t in sorted(per)]
    rows.append(["**mean**", *[f"{mean[r]['epochs_saved_pct']:.1f} % / "
                               f"{mean[r]['mean_regret']:.3f}" for r in rules]])
    print_table(title, header, rows)
    d, a = mean["default"], mean["asha"]
    more = d["epochs_saved_pct"] > a["epochs_saved_pct"]
    half = d["mean_regret"] <= 0.5 * a["mean_regret"]
    beats = sum(per[t]["default"]["epochs_saved_pct"] > per[t]["asha"]["epochs_saved_pct"]
                and per[t]["default"]["mean_regret"] <= per[t]["asha"]["mean_regret"]
                for t in per)
    print(f"\ndefault vs ASHA: saved {d['epochs_saved_pct']:.1f} % vs {a['epochs_saved_pct']:.1f} "
          f"% ({'PASS' if more else 'FAIL'} more), regret {d['mean_regret']:.3f} vs "
          f"{a['mean_regret']:.3f} ({'PASS' if half else 'FAIL'} <= half); better on both "
          f"axes on {beats}/{len(per)} tasks")
    return {"per_task": per, "mean": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--runs-per-order", type=int, default=100)
    ap.add_argument("--patient-orders", type=int, default=5,
                    help="orders per task through Optuna's PatientPruner (0: none)")
    ap.add_argument("--wilcoxon-orders", type=int, default=5,
                    help="orders per task through Optuna's WilcoxonPruner (about "
                    "20 s an order of 100 runs; 0: none)")
    ap.add_argument("--lcbench-limit", type=int, default=300,
                    help="runs per held-out LCBench task (0: skip LCBench)")
    ap.add_argument("--json", default=None, help="write the tables to this file")
    ap.add_argument("--no-real", action="store_true", help="skip the real families")
    ap.add_argument("--optuna-cache", default=None,
                    help="read the Optuna pruners' rows from this file, or write them there")
    ap.add_argument("--optuna-only", action="store_true",
                    help="only run the Optuna pruners into --optuna-cache (no model needed)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    counts = {"patient": args.patient_orders, "wilcoxon": args.wilcoxon_orders}
    if args.optuna_only:
        groups = [(recs, None) for recs, _ in real_groups(args.model, load=False)]
        run_groups(groups, args, counts, args.optuna_cache + ".real")
        if args.lcbench_limit:
            run_groups([(recs, None) for recs, _ in lcbench_groups(
                args.model, args.lcbench_limit, load=False)],
                       args, counts, args.optuna_cache + ".lcbench")
        print(f"{time.perf_counter() - t0:.0f} s")
        return
    cache = args.optuna_cache
    out = {}
    if not args.no_real:
        per = run_groups(real_groups(args.model), args, counts, cache and cache + ".real")
        some = next(iter(per.values()))
        n = {r: some[r]["orders"] for r in ("patient", "wilcoxon") if r in some}
        through = ""
        if n:
            through = "; on the first orders through Optuna: " + ", ".join(
                f"{NAMES[r].split(' (')[0]} {k}" for r, k in n.items())
        out["real"] = table(f"Search, real families out of fold ({args.orders} orders x "
                            f"{args.runs_per_order} runs{through})", per)
    if args.lcbench_limit:
        out["lcbench"] = table("Search, held-out LCBench tasks",
                               run_groups(lcbench_groups(args.model, args.lcbench_limit), args,
                                          counts,
                                          cache and cache + ".lcbench"))
        d = out["lcbench"]["mean"]["default"]
        ok = d["epochs_saved_pct"] >= 88 and d["mean_regret"] <= 0.2
        print(f"LCBench default {d['epochs_saved_pct']:.1f} % at {d['mean_regret']:.3f}: "
              f"{'PASS' if ok else 'FAIL'} (>= 88 % at <= 0.2)")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
