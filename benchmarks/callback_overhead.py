"""Per-epoch overhead of ForecastMonitor.update: forecast + policy (+ ledger write).

Runs a 50-epoch run through :class:`~earlystop_predict.policy.monitor.ForecastMonitor`
``--repeats`` times per case and prints p50 / p99 / mean milliseconds per
``update()`` call, with and without an SQLite ledger, for the bundled model
(``load_model()``; noted as missing if it is not built yet) and for a constant
scripted forecaster (the cost of everything but the model). Also times
``Ledger.log_epoch`` alone. A second table times single epochs of a 100-epoch run
(median over runs, at epoch 15 and epoch 95): ``update()`` alone, and with what the
Keras callback adds each epoch with a ``state_path`` (the state file).

Usage:
    .venv/bin/python benchmarks/callback_overhead.py [--repeats 20] [--epochs 50]
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

from earlystop_predict import ForecastMonitor, ScriptedForecaster, load_model  # noqa: E402
from earlystop_predict.errors import EarlystopPredictError  # noqa: E402
from earlystop_predict.forecast.base import Forecaster  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.policy.stop import StopPolicy  # noqa: E402
from earlystop_predict.records.record import RunRecord  # noqa: E402

HPARAMS = {"learning_rate": 0.01, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9,
           "weight_decay": 1e-4, "dropout": 0.1, "num_layers": 2, "width": 256,
           "lr_schedule": "cosine"}
META = {"train_size": 10000, "num_classes": 10, "num_params": 85000, "framework": "torch"}


def _curve(epochs: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    final = rng.uniform(0.6, 0.95)
    rows = []
    for e in range(1, epochs + 1):
        acc = final * (1 - math.exp(-e / 8)) + rng.normal(0, 0.005)
        rows.append({"val_accuracy": float(np.clip(acc, 0, 1)), "val_loss": 1.5 - acc,
                     "train_loss": 1.4 - acc})
    return rows


def time_monitor(model: Forecaster, ledger_path: Path | None, repeats: int,
                 epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU seconds per update() over ``repeats`` runs of ``epochs`` epochs.

    A first, untimed run warms caches and the model up.
    """
    times, cpu = [], []
    led = Ledger(ledger_path) if ledger_path is not None else None
    try:
        for rep in range(repeats + 1):
            mon = ForecastMonitor(target_epoch=epochs, threshold=None, min_epochs=3,
                                  model=model, ledger=led, study="bench",
                                  run_id=f"bench-{rep}", hparams=HPARAMS, meta=META,
                                  dry_run=True)  # never stop: time all epochs
            mon.begin()
            for e, metrics in enumerate(_curve(epochs, rep), start=1):
                c0, t0 = time.thread_time(), time.perf_counter()
                mon.update(e, metrics)
                dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                if rep > 0:
                    times.append(dt)
                    cpu.append(dc)
            mon.end()
    finally:
        if led is not None:
            led.close()
    return np.asarray(times), np.asarray(cpu)


def time_log_epoch(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU seconds per Ledger.log_epoch (epoch row + forecast, one transaction)."""
    pol = StopPolicy(threshold=0.5)
    fc = ScriptedForecaster(lambda r, m: (0.7, {0.1: 0.6, 0.5: 0.7, 0.9: 0.8}))
    rec = RunRecord("log-epoch", hparams=HPARAMS, meta=META,
                    epochs=[{"epoch": 1, "val_accuracy": 0.5}])
    decision = pol.decide(fc.forecast(rec, 50), epoch=1)
    times, cpu = [], []
    with Ledger(path) as led:
        led.start_run(rec, study="bench", target_epoch=n + 1)
        for e in range(1, n + 1):
            row = {"epoch": e, "val_accuracy": 0.5, "val_loss": 1.0, "time": 0.1}
            c0, t0 = time.thread_time(), time.perf_counter()
            led.log_epoch("log-epoch", row, decision)
            times.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    return np.asarray(times), np.asarray(cpu)


def _save_state(mon: ForecastMonitor, path: Path, saver: Any) -> None:
    """What the Keras callback does after ``update()`` with a ``state_path``."""
    if saver is None:  # the pre-StateFile code path: a full write every epoch
        from earlystop_predict.integrations._common import write_state

        write_state(path, mon.state_dict())
    else:
        saver.save(mon.state_dict(snapshot=False))  # as the callback does


def _state_saver(path: Path) -> Any:
    try:
        from earlystop_predict.integrations._state import StateFile
    except ImportError:
        return None
    return StateFile(path)


def time_per_epoch(model: Forecaster, repeats: int, at: tuple[int, ...],
                   state_dir: Path | None) -> dict[int, tuple[float, float]]:
    """Median (wall, thread CPU) ms of the epochs in ``at`` over ``repeats`` runs of
    ``max(at) + 5`` epochs."""
    epochs = max(at) + 5
    got: dict[int, list[tuple[float, float]]] = {e: [] for e in at}
    for rep in range(repeats + 1):
        mon = ForecastMonitor(target_epoch=epochs, min_epochs=3, model=model,
                              run_id=f"pe-{rep}", hparams=HPARAMS, meta=META, dry_run=True)
        mon.begin()
        path = state_dir / f"state-{rep}.json" if state_dir is not None else None
        saver = _state_saver(path) if path is not None else None
        for e, metrics in enumerate(_curve(epochs, rep), start=1):
            c0, t0 = time.thread_time(), time.perf_counter()
            mon.update(e, metrics)
            if path is not None:
                _save_state(mon, path, saver)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            if rep > 0 and e in got:
                got[e].append((dt * 1e3, dc * 1e3))
    return {e: (float(np.median([w for w, _ in v])), float(np.median([c for _, c in v])))
            for e, v in got.items()}


def _row(name: str, ledger: str, t: tuple[np.ndarray, np.ndarray]) -> str:
    ms, cms = t[0] * 1e3, t[1] * 1e3
    return (f"{name:<22} {ledger:<7} {np.percentile(ms, 50):>9.3f} {np.percentile(ms, 99):>9.3f} "
            f"{ms.mean():>9.3f} {np.percentile(cms, 50):>9.3f} {np.percentile(cms, 99):>9.3f} "
            f"{len(ms):>6d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="runs per case (default 20)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per run (default 50)")
    parser.add_argument("--model", default="auto", help="load_model kind (default auto)")
    args = parser.parse_args()

    models: list[tuple[str, Forecaster]] = [
        ("scripted (no model)", ScriptedForecaster(
            lambda r, m: (0.8, {0.1: 0.7, 0.25: 0.75, 0.5: 0.8, 0.75: 0.85, 0.9: 0.9})))]
    note = ""
    try:
        model = load_model(args.model)
        models.append((f"bundled {args.model}", model))
    except (EarlystopPredictError, ImportError) as exc:
        note = f"bundled model missing ({type(exc).__name__}: {exc}); timed the scripted one only"

    print(f"ForecastMonitor.update overhead: {args.repeats} runs x {args.epochs} epochs per "
          f"case; python {platform.python_version()}, {platform.machine()}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    if note:
        print(note)
    head = (f"{'forecaster':<22} {'ledger':<7} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} "
            f"{'cpu p50':>9} {'cpu p99':>9} {'n':>6}")
    print(head)
    print("-" * len(head))
    print("(wall ms per call; 'cpu' is this thread's CPU ms, blind to other processes' load)")
    served: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            for with_ledger in (False, True):
                path = Path(tmp) / f"{len(served)}-{with_ledger}.db" if with_ledger else None
                t = time_monitor(model, path, args.repeats, args.epochs)
                print(_row(name, "yes" if with_ledger else "no", t))
                served[name] = model.name
        t = time_log_epoch(Path(tmp) / "log_epoch.db", args.repeats * args.epochs)
        print(_row("Ledger.log_epoch only", "yes", t))
        print()
        at = (15, 95)
        head = f"{'per epoch, median ms (wall / cpu)':<40} " + " ".join(
            f"{'epoch ' + str(e):>15}" for e in at)
        print(head)
        print("-" * len(head))
        for name, model in models:
            for label, sdir in (("update()", None), ("update() + Keras state_path", Path(tmp))):
                med = time_per_epoch(model, args.repeats, at, sdir)
                print(f"{name.split(' (')[0] + ': ' + label:<40} "
                      + " ".join(f"{med[e][0]:>7.3f} /{med[e][1]:>6.3f}" for e in at))
    if len(models) > 1:
        probe = models[1][1].forecast(
            RunRecord("probe", hparams=HPARAMS, meta=META,
                      epochs=[{"epoch": i + 1, **m} for i, m in enumerate(_curve(5, 0))]),
            args.epochs)
        print(f"bundled model served as {probe.model!r}"
              + (f" ({probe.reason})" if probe.reason else ""))


if __name__ == "__main__":
    main()
