"""Study-aware forecasts: the guarded gain correction, the monitor, the CLI, real Keras.

The base forecaster in these tests over-forecasts on purpose (``last + 0.3``) on runs
that stay flat, so a study's finished runs are clear evidence against it: the
correction must take over once 5 runs have finished, and only then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.forecast.study import (
    StudyContext,
    StudyCorrection,
    StudyForecaster,
    fit_correction,
)
from earlystop_predict.ledger import Ledger
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.records.record import RunRecord


def over() -> ScriptedForecaster:
    """Forecasts 0.3 above the last value, spread 0.05 either side."""
    def fn(rec, m):
        v = rec.series(rec.metric)[-1] + 0.3
        return v, {0.1: v - 0.05, 0.5: v, 0.9: v + 0.05}
    return ScriptedForecaster(fn, name="over")


def flat(run_id: str, level: float, epochs: int = 10) -> RunRecord:
    return RunRecord(run_id, epochs=[{"epoch": e, "val_accuracy": level} for e in range(1, epochs + 1)])


def test_fit_recovers_a_halved_gain_and_refuses_what_does_not_help():
    rng = np.random.default_rng(0)
    gain = rng.uniform(0.0, 0.2, 30)
    fix = fit_correction(gain, 0.5 * gain, prior=0.0)
    assert fix is not None and fix.slope == pytest.approx(0.5, abs=0.05)
    assert abs(fix.shift) < 0.01 and fix.error_ratio < 0.2
    # the base is already right: no correction can beat it out of sample
    assert fit_correction(gain, gain) is None
    assert fit_correction(gain[:4], 0.5 * gain[:4]) is None  # fewer than 5 runs
    assert fit_correction(gain, gain + rng.normal(0, 0.05, 30), guard=0.5) is None


def test_spread_widens_when_the_finished_runs_ended_outside_it():
    rng = np.random.default_rng(1)
    gain = rng.uniform(0.0, 0.2, 40)
    real = 0.5 * gain + rng.normal(0, 0.05, 40)
    narrow = fit_correction(gain, real, np.full(40, 0.005))
    wide = fit_correction(gain, real, np.full(40, 0.5))
    assert narrow is not None and wide is not None
    assert narrow.width > 1.5 and wide.width < 1.0


def test_apply_moves_the_gain_and_keeps_the_distribution_ordered():
    base = over().forecast(flat("r", 0.5, 3), 10)
    fc = StudyCorrection(slope=0.5, shift=0.0, runs=7, error_ratio=0.3).apply(base, 0.5)
    assert fc.mean == pytest.approx(0.65) and fc.quantile(0.5) == pytest.approx(0.65)
    qs = [fc.quantiles[k] for k in sorted(fc.quantiles, key=float)]
    assert qs == sorted(qs)
    assert fc.model == "over+study" and "7 finished runs" in fc.reason


def test_study_forecaster_serves_from_five_finished_runs_and_leaves_unfinished_ones_out():
    runs = [flat(f"s{i}", 0.4 + 0.01 * i) for i in range(4)]
    runs.append(RunRecord("stopped", epochs=flat("x", 0.4).epochs,
                          stopped={"epoch": 10, "reason": "threshold"}))
    runs.append(RunRecord("running", epochs=flat("y", 0.4).epochs, extra={"status": "running"}))
    query = flat("q", 0.45, 3)
    ctx = StudyContext(over(), runs)
    assert len(ctx) == 4  # the stopped and the running run are not evidence
    assert StudyForecaster(over(), ctx).forecast(query, 10).model == "over"
    ctx = StudyContext(over(), [*runs, flat("s4", 0.44)])
    fc = StudyForecaster(over(), ctx).forecast(query, 10)
    assert fc.model == "over+study" and "5 finished runs" in fc.reason
    assert fc.mean == pytest.approx(0.45, abs=0.02)  # flat runs stay flat
    assert StudyContext(over(), runs, exclude="s0").run_ids == ("s1", "s2", "s3")


def _study_run(mon: ForecastMonitor, level: float, epochs: int = 8) -> list[dict]:
    mon.begin()
    for e in range(1, epochs + 1):
        mon.update(e, {"val_accuracy": level})
    mon.end()
    return mon.record.forecasts


@pytest.mark.parametrize("use_study", [True, False])
def test_monitor_reads_the_study_from_its_ledger(tmp_path, use_study):
    mon = ForecastMonitor(target_epoch=8, study="s", ledger=tmp_path / "l.db", model=over(),
                          use_study=use_study, use_incumbent=False, min_delta=None)
    models = [{f["model"] for f in _study_run(mon, 0.3 + 0.01 * i) if "model" in f}
              for i in range(7)]
    assert models[:5] == [{"over"}] * 5
    assert models[5:] == ([{"over+study"}] * 2 if use_study else [{"over"}] * 2)
    with Ledger(tmp_path / "l.db") as led:
        last = led.records("s")[-1].forecasts
    assert {f["model"] for f in last if "model" in f} == models[-1]
    if use_study:
        assert "study: 6 finished runs" in last[2]["model_reason"]


def test_a_ledger_that_cannot_be_read_leaves_the_forecasts_uncorrected(tmp_path):
    path = tmp_path / "l.db"
    mon = ForecastMonitor(target_epoch=8, study="s", ledger=path, model=over(),
                          use_incumbent=False)
    for i in range(6):
        _study_run(mon, 0.3 + 0.01 * i)
    import sqlite3
    with sqlite3.connect(path) as c:
        c.execute("UPDATE epochs SET data = 'not json' WHERE epoch = 1")
    forecasts = _study_run(mon, 0.3)
    assert mon.study_context is None
    assert {f["model"] for f in forecasts if "model" in f} == {"over"}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "earlystop_predict.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_forecast_with_context(tmp_path):
    study = _jsonl(tmp_path / "study.jsonl", [
        {"run_id": f"s{i}", "epochs": [{"epoch": e, "val_accuracy": 0.3 + 0.01 * i
                                        + 0.002 * np.sin(e + i)} for e in range(1, 31)]}
        for i in range(8)])
    runs = _jsonl(tmp_path / "runs.jsonl", [
        {"run_id": "new", "epochs": [{"epoch": e, "val_accuracy": 0.31} for e in range(1, 7)]},
        {"run_id": "s0", "epochs": [{"epoch": e, "val_accuracy": 0.3} for e in range(1, 7)]}])
    plain = _cli("forecast", runs, "--target", 30, "--output", "-")
    ctx = _cli("forecast", runs, "--target", 30, "--output", "-", "--context", study)
    assert plain.returncode == 0 and ctx.returncode == 0, ctx.stderr
    plain_rows = [json.loads(x) for x in plain.stdout.splitlines()]
    rows = [json.loads(x) for x in ctx.stdout.splitlines()]
    assert [r["model"] for r in plain_rows] == ["lstm+lightgbm", "lstm+lightgbm"]
    assert [r["model"] for r in rows] == ["lstm+lightgbm+study", "lstm+lightgbm+study"]
    assert "8 finished runs" in rows[0]["reason"] and "7 finished runs" in rows[1]["reason"]
    # flat runs: the study pulls the forecast towards staying flat
    assert abs(rows[0]["mean"] - 0.31) < abs(plain_rows[0]["mean"] - 0.31)


def test_cli_context_errors_name_the_file_and_line_and_keep_the_inputs(tmp_path):
    study = tmp_path / "study.jsonl"
    study.write_text('{"run_id": "a", "epochs": [{"epoch": 1, "val_accuracy": 0.5}]}\n'
                     '{"run_id": "b", "epochs": [{"epoch": 1, "val_accuracy": 50}]}\n')
    runs = _jsonl(tmp_path / "runs.jsonl",
                  [{"run_id": "n", "epochs": [{"epoch": 1, "val_accuracy": 0.3}]}])
    bad = _cli("forecast", runs, "--target", 30, "--output", tmp_path / "o.jsonl",
               "--context", study)
    assert bad.returncode == 2 and "study.jsonl" in bad.stderr and "line 2" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "o.jsonl").exists()
    same = _cli("forecast", runs, "--target", 30, "--output", study, "--context", study)
    assert same.returncode == 2 and "--context" in same.stderr
    assert "val_accuracy\": 50" in study.read_text()


def test_a_real_keras_search_is_served_by_the_study_model_once_five_runs_finished(tmp_path):
    """Seven configurations of a Keras MLP that cannot learn (learning rate 0: flat
    curves): from the sixth on, the ledger and Keras' logs show the corrected forecast."""
    keras = pytest.importorskip("keras")
    from earlystop_predict.integrations.keras import KerasForecastCallback

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 4)).astype("float32"), rng.integers(0, 2, 48)
    means = []
    for i in range(7):
        keras.utils.set_random_seed(i)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(keras.optimizers.SGD(learning_rate=0.0), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        cb = KerasForecastCallback(study="flat", ledger=tmp_path / "l.db", model=over(),
                                   run_id=f"cfg{i}", min_delta=None, use_incumbent=False)
        hist = model.fit(x, y, epochs=5, validation_split=0.25, batch_size=12, verbose=0,
                         callbacks=[cb])
        gap = np.array(hist.history["esp/forecast_mean"][:-1]) - \
            np.array(hist.history["val_accuracy"][:-1])
        means.append(float(np.max(np.abs(gap))))
    with Ledger(tmp_path / "l.db") as led:
        served = [{f["model"] for f in r.forecasts if "model" in f} for r in led.records("flat")]
    assert served == [{"over"}] * 5 + [{"over+study"}] * 2
    assert min(means[:5]) > 0.25 and max(means[5:]) < 0.05


@pytest.mark.parametrize("use_study", [True, False])
def test_an_optuna_study_without_a_ledger_learns_from_its_completed_trials(use_study):
    optuna = pytest.importorskip("optuna")
    from earlystop_predict.integrations.optuna import ForecastPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = ForecastPruner(target_epoch=8, model=over(), use_incumbent=False, min_delta=None,
                            use_study=use_study)
    study = optuna.create_study(direction="maximize", pruner=pruner)

    def objective(trial):
        level = 0.3 + 0.01 * trial.number
        for step in range(8):
            trial.report(level, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return level

    study.optimize(objective, n_trials=7, callbacks=[pruner])
    served = [{f["model"] for f in pruner.records[n].forecasts if "model" in f}
              for n in range(7)]
    assert served[:5] == [{"over"}] * 5
    assert served[5:] == ([{"over+study"}] * 2 if use_study else [{"over"}] * 2)


def test_batched_decisions_are_served_by_the_study_model_as_one_at_a_time(tmp_path):
    from earlystop_predict.policy.monitor import update_many

    path = tmp_path / "l.db"
    mon = ForecastMonitor(target_epoch=8, study="s", ledger=path, model=over(),
                          use_incumbent=False, min_delta=None)
    for i in range(5):
        _study_run(mon, 0.3 + 0.01 * i)
    pair = [ForecastMonitor(target_epoch=8, study="s", ledger=path, model=over(), run_id=f"b{i}",
                            use_incumbent=False, min_delta=None) for i in range(2)]
    alone = ForecastMonitor(target_epoch=8, study="s", ledger=path, model=over(), run_id="a",
                            use_incumbent=False, min_delta=None)
    for m in (*pair, alone):
        m.begin()
    for e in range(1, 5):
        batched = update_many([(m, e, {"val_accuracy": 0.32}) for m in pair])
        single = alone.update(e, {"val_accuracy": 0.32})
        assert [d.forecast.model for d in batched] == ["over+study"] * 2
        assert batched[0].forecast.mean == pytest.approx(single.forecast.mean, abs=1e-12)
        assert single.forecast.model == "over+study"


def test_a_ray_trial_book_without_a_ledger_learns_from_its_completed_trials():
    from earlystop_predict.integrations._trials import TrialBook

    def make(key, hparams):
        return ForecastMonitor(target_epoch=8, model=over(), run_id=key, use_incumbent=False,
                               min_delta=None)

    book = TrialBook(make)
    for i in range(7):
        for e in range(1, 9):
            book.update(f"t{i}", {}, e, {"val_accuracy": 0.3 + 0.01 * i})
        book.end(f"t{i}", None, completed=True)
    served = [{f["model"] for f in book.monitors[f"t{i}"].record.forecasts if "model" in f}
              for i in range(7)]
    assert served == [{"over"}] * 5 + [{"over+study"}] * 2
    again = TrialBook(make)
    again.load_state_dict(book.state_dict())
    assert again.completed == [f"t{i}" for i in range(7)]


def test_a_corrected_forecast_stays_one_coherent_distribution():
    base = over().forecast(flat("r", 0.5, 3), 10)          # mean 0.8 = median, spread 0.05
    skewed = StudyCorrection(slope=1.5, shift=0.0, runs=9, error_ratio=0.5, width=0.5)
    from dataclasses import replace
    fc = skewed.apply(replace(base, mean=0.84), 0.5)        # a mean off the median
    assert fc.quantiles["0.1"] <= fc.mean <= fc.quantiles["0.9"]
