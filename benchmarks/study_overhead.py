"""What a study context costs a run: the fit at ``begin()``, then each epoch.

Run: python benchmarks/study_overhead.py [--finished 29] [--epochs 50] [--repeats 5]

A study of ``--finished`` finished runs of ``--epochs`` epochs is written to an
SQLite ledger with the bundled model; then one more run of the study is timed,
with ``use_study=True`` (its forecasts corrected by the finished runs: the
StudyContext is built at ``begin()``, outside every epoch) and with
``use_study=False`` (the plain forecast), ``--repeats`` times each, interleaved.
Prints the median wall ms of ``begin()`` and of each ``update()`` (p50 and max),
and how many of the run's forecasts the study model served.
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


def _run(model, ledger: Path, run_id: str, rows, use_study: bool):
    mon = ForecastMonitor(target_epoch=len(rows), study="s", ledger=ledger, model=model,
                          run_id=run_id, hparams=HPARAMS, meta=META, use_study=use_study,
                          dry_run=True)
    t0 = time.perf_counter()
    mon.begin()
    begin = time.perf_counter() - t0
    ups = []
    for e, row in enumerate(rows, 1):
        t0 = time.perf_counter()
        mon.update(e, row)
        ups.append(time.perf_counter() - t0)
    served = sum("+study" in f.get("model", "") for f in mon.record.forecasts)
    mon.end()
    return begin, np.array(ups[:-1]), served  # the last epoch has no forecast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finished", type=int, default=29)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "l.db"
        for i in range(args.finished):
            _run(model, ledger, f"done{i}", _curve(args.epochs, i), use_study=False)
        out = {True: [], False: []}
        for rep in range(args.repeats):
            for use in (False, True):
                out[use].append(_run(model, ledger, f"timed-{use}-{rep}",
                                     _curve(args.epochs, 1000 + rep), use_study=use))
                with __import__("sqlite3").connect(ledger) as c:  # keep the study at N
                    c.execute("DELETE FROM runs WHERE run_id = ?", (f"timed-{use}-{rep}",))
    rows = []
    for use, name in ((False, "plain forecast (use_study=False)"),
                      (True, f"study model, {args.finished} finished runs")):
        begins = [1e3 * b for b, _, _ in out[use]]
        ups = np.concatenate([u for _, u, _ in out[use]]) * 1e3
        served = out[use][0][2]
        rows.append([name, float(np.median(begins)), float(np.median(ups)),
                     float(np.percentile(ups, 99)), float(ups.max()), served])
    print_table(f"one more run of a {args.finished}-run study, {args.epochs} epochs, "
                f"{args.repeats} repeats (wall ms)",
                ["forecasts", "begin()", "update() p50", "update() p99", "update() max",
                 "forecasts served by the study model"], rows)


if __name__ == "__main__":
    main()
