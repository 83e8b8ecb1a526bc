"""What a study context costs a run: the fit at ``begin()``, then each epoch.

Run: python benchmarks/study_overhead.py [--finished 49] [--epochs 50] [--repeats 5]

A study of ``--finished`` finished runs of ``--epochs`` epochs is written to an
SQLite ledger with the bundled model; then one more run of the study is timed,
``--repeats`` times each, interleaved:

* plain forecast: ``use_study=False``;
* correction: ``use_study=True, study_model_runs=None`` (the finished runs' correction:
  the StudyContext is built at ``begin()``, outside every epoch);
* study model: ``use_study=True`` with the study model (``study_model_runs`` 40, the
  default) grown before the timed runs: its background fit is excluded, and waited for
  (each timed run's ``begin()`` finds it ready and starts no new fit, the study staying
  at ``--finished`` runs).

Prints the median wall ms of ``begin()`` and of each ``update()`` (p50, p99 and max),
each ``update()`` p50 and max over the plain forecast's p50, the slowest epoch against
the plain forecast's same epoch (each epoch's median over the repeats: the issue's "no
epoch slower than 2 x a plain forecast", with the machine's noise taken out by the
repeats), and how many of the run's forecasts the study (its correction, its study
model) served.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402
from callback_overhead import HPARAMS, META, _curve  # noqa: E402

from earlystop_predict import ForecastMonitor, load_model  # noqa: E402

KINDS = {"plain": {"use_study": False}, "correction": {"study_model_runs": None},
         "study model": {}}


def _run(model, ledger: Path, run_id: str, rows, kind: str = "plain"):
    mon = ForecastMonitor(target_epoch=len(rows), study="s", ledger=ledger, model=model,
                          run_id=run_id, hparams=HPARAMS, meta=META, dry_run=True,
                          **KINDS[kind])
    t0 = time.perf_counter()
    mon.begin()
    begin = time.perf_counter() - t0
    if mon.study_model is not None and not mon.study_model.wait(0):
        raise SystemExit("a study model fit runs during a timed run")
    ups = []
    for e, row in enumerate(rows, 1):
        t0 = time.perf_counter()
        mon.update(e, row)
        ups.append(time.perf_counter() - t0)
    served = (sum("+study" in f.get("model", "") for f in mon.record.forecasts),
              sum("+study-model" in f.get("model", "") for f in mon.record.forecasts))
    mon.end()
    return begin, np.array(ups[:-1]), served  # the last epoch has no forecast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finished", type=int, default=49)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "l.db"
        for i in range(args.finished):
            _run(model, ledger, f"done{i}", _curve(args.epochs, i))
        grow = ForecastMonitor(target_epoch=args.epochs, study="s", ledger=ledger, model=model,
                               run_id="grow", hparams=HPARAMS, meta=META)
        grow.begin()  # the study model's fit starts here, in the background...
        t0 = time.perf_counter()
        if grow.study_model is not None:
            grow.study_model.wait()  # ...and is excluded from every timed epoch
        fit_s = time.perf_counter() - t0
        note = grow.study_model.note if grow.study_model is not None else "off"
        out: dict[str, list] = {k: [] for k in KINDS}
        for rep in range(args.repeats):
            for kind in KINDS:
                run_id = f"timed-{kind}-{rep}"
                out[kind].append(_run(model, ledger, run_id, _curve(args.epochs, 1000 + rep),
                                      kind))
                with __import__("sqlite3").connect(ledger) as c:  # keep the study at N
                    c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
    plain = np.median(np.concatenate([u for _, u, _ in out["plain"]])) * 1e3
    plain_by_epoch = np.median(np.stack([u for _, u, _ in out["plain"]]), axis=0)
    rows = []
    for kind, name in (("plain", "plain forecast (use_study=False)"),
                       ("correction", f"correction, {args.finished} finished runs"),
                       ("study model", f"correction + study model, {args.finished} runs")):
        begins = [1e3 * b for b, _, _ in out[kind]]
        ups = np.concatenate([u for _, u, _ in out[kind]]) * 1e3
        study, grown = out[kind][0][2]
        by_epoch = np.median(np.stack([u for _, u, _ in out[kind]]), axis=0)
        rows.append([name, float(np.median(begins)), float(np.median(ups)),
                     float(np.percentile(ups, 99)), float(ups.max()),
                     float(np.median(ups) / plain), float(ups.max() / plain),
                     float((by_epoch / plain_by_epoch).max()), f"{study} / {grown}"])
    print(f"study model: grown in {fit_s:.1f} s in the background (excluded){'; ' + note if note else ''}")
    print_table(f"one more run of a {args.finished}-run study, {args.epochs} epochs, "
                f"{args.repeats} repeats (wall ms)",
                ["forecasts", "begin()", "update() p50", "update() p99", "update() max",
                 "p50 / plain p50", "max / plain p50", "slowest epoch / plain's same epoch",
                 "forecasts served by the study: correction / study model"], rows)


if __name__ == "__main__":
    main()
