"""Per-result cost of ForecastScheduler in the Tune driver, 200 trials running:
one trial at a time (``batch=0``, the default) against batched (``batch > 0``: the held
trials forecast in one call).

Drives ``ForecastScheduler.on_trial_result`` directly, as Tune's controller does, with
``--trials`` Trial-like objects that all report epoch 1, then all epoch 2, ... (every
trial running: ``dry_run=True``, so that none stops and both ways see the same load),
and a controller stand-in that does what Tune does with a held trial's decision. Prints
milliseconds of driver time per trial result (mean over all epochs, and the mean of the
rounds at two epochs), for the bundled model and for a constant scripted forecaster (the
cost of all but the model), without and with an SQLite ledger; and checks that both ways
record the same decisions.

Usage:
    .venv/bin/python benchmarks/ray_scheduler.py [--trials 200] [--epochs 30]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the machine is shared: one core per process

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _common import print_table  # noqa: E402

from earlystop_predict import ScriptedForecaster, load_model  # noqa: E402
from earlystop_predict.integrations.ray import ForecastScheduler  # noqa: E402


class Trial:
    """What the scheduler reads of a Tune trial."""

    def __init__(self, i: int, rng: np.random.Generator) -> None:
        self.trial_id = f"{i:05d}"
        self.config = {"learning_rate": float(10 ** rng.uniform(-4, -1)),
                       "batch_size": int(rng.choice([32, 64, 128]))}
        self.top, self.speed = float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.3, 1.2))
        self.status, self.is_saving = "RUNNING", False

    def result(self, epoch: int) -> dict[str, Any]:
        acc = self.top - (self.top - 0.1) * epoch ** -self.speed
        return {"training_iteration": epoch, "val_accuracy": acc,
                "val_loss": 2.0 - 1.5 * acc + 0.01 * math.sin(epoch), "time_this_iter_s": 1.0}


class Controller:
    """Tune's controller, as far as the scheduler uses it."""

    def __init__(self, trials: list[Trial]) -> None:
        self.trials = trials
        self.continued = 0

    def get_live_trials(self) -> list[Trial]:
        return self.trials

    def _execute_action(self, trial: Trial, decision: str) -> None:
        self.continued += decision == "CONTINUE"


def drive(sched: ForecastScheduler, n_trials: int, epochs: int,
          seed: int = 0) -> tuple[list[float], dict[str, Any]]:
    """Milliseconds per result of each epoch's round, and the records."""
    rng = np.random.default_rng(seed)
    trials = [Trial(i, rng) for i in range(n_trials)]
    ctrl = Controller(trials)
    per_round = []
    for epoch in range(1, epochs + 1):
        results = [t.result(epoch) for t in trials]
        t0 = time.perf_counter()
        for trial, result in zip(trials, results, strict=True):
            sched.on_trial_result(ctrl, trial, result)
        sched.choose_trial_to_run(ctrl) if sched.book.held else None
        per_round.append((time.perf_counter() - t0) * 1000 / n_trials)
    return per_round, sched.records


def _decisions(rec: Any) -> list[tuple[Any, ...]]:
    return [(f["at_epoch"], f["stop"], f.get("model"), f["reason"].split(":")[0])
            for f in rec.forecasts]


def _gap(a: Any, b: Any) -> float:
    means = [(x.get("mean"), y.get("mean")) for x, y in zip(a.forecasts, b.forecasts,
                                                            strict=True)]
    return max([abs(x - y) for x, y in means if x is not None and y is not None] or [0.0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    at = (5, args.epochs - 5)
    models = {"bundled (LSTM)": load_model, "scripted (constant)":
              lambda: ScriptedForecaster(lambda rec, m: 0.5)}
    rows, same, diff = [], True, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in models.items():
            for ledger in (False, True):
                got = {}
                for batch in (0.0, 60.0):
                    db = str(Path(tmp) / f"{name[:3]}{ledger}{batch}.db") if ledger else None
                    sched = ForecastScheduler(args.epochs + 1, metric="val_accuracy",
                                              mode="max", model=make(), ledger=db,
                                              dry_run=True, batch=batch)
                    got[batch] = drive(sched, args.trials, args.epochs)
                (one, rec_one), (many, rec_many) = got[0.0], got[60.0]
                same &= all(_decisions(rec_one[k]) == _decisions(rec_many[k]) for k in rec_one)
                diff = max(diff, max(_gap(rec_one[k], rec_many[k]) for k in rec_one))
                rows.append([name, "sqlite" if ledger else "none",
                             float(np.mean(one)), float(np.mean(many)),
                             float(np.mean(one) / np.mean(many)),
                             *[float(one[e - 1]) for e in at], *[float(many[e - 1]) for e in at]])
    print(f"{args.trials} running trials, {args.epochs} epochs each; Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, one BLAS thread")
    print_table(f"ForecastScheduler driver time, ms per trial result ({args.trials} trials)",
                ["model", "ledger", "one at a time", "batched", "speed-up",
                 f"one @{at[0]}", f"one @{at[1]}", f"batched @{at[0]}", f"batched @{at[1]}"],
                rows)
    print(f"\nsame decisions both ways: {'yes' if same else 'NO'}; largest difference of a "
          f"forecast mean: {diff:.1e} (the LSTM's incremental and whole-sequence passes)")


if __name__ == "__main__":
    main()
