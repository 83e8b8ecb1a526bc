"""Policy replay (hand-checked cases, Optuna parity); the report is in test_report.py."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from conftest import constant, write_lines

from earlystop_predict.cli import main
from earlystop_predict.errors import ConfigError
from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.policy.stop import StopPolicy
from earlystop_predict.records.record import RunRecord, write_records
from earlystop_predict.tools.replay import (
    _NO_STOP,
    _nan_median,
    _StopEpochs,
    build_tasks,
    precompute_forecasts,
    replay,
)

M = 10
FINALS = {"A": 0.9, "B": 0.5, "C": 0.7}


def _ramp(run_id: str, final: float, task: str = "t") -> RunRecord:
    """A run whose accuracy climbs linearly to ``final`` at epoch M."""
    return RunRecord(run_id, task=task, meta={"max_epochs": M},
                     epochs=[{"epoch": e, "val_accuracy": final * e / M}
                             for e in range(1, M + 1)])


def _oracle(lies: dict[str, float] | None = None) -> ScriptedForecaster:
    """Forecasts each run's true final value, zero width (or the given lie)."""
    lies = lies or {}
    return ScriptedForecaster(lambda rec, m: lies.get(rec.run_id, FINALS[rec.run_id]))


RUNS = [_ramp(k, v) for k, v in FINALS.items()]  # indices: A=0, B=1, C=2
ORDERS = [[0, 1, 2], [1, 2, 0], [2, 1, 0]]


# --------------------------------------------------------------------- hand-checked
def test_incumbent_by_hand():
    # [A,B,C]: A completes (10), B and C forecast below 0.9 -> stop at 3: 16 of 30 epochs.
    # [B,C,A]: 0.5, then 0.7 >= 0.5, then 0.9: all complete: 30 of 30.
    # [C,B,A]: C completes, B stops at 3, A completes: 23 of 30.
    fc = _oracle()
    res = replay(RUNS, ["incumbent", "none"], fc, orders=ORDERS, min_epochs=3, details=True)
    inc = res.summary["incumbent"]
    assert inc["epochs_saved_pct"] == pytest.approx(100 * (14 + 0 + 7) / 90)
    assert inc["stopped_pct"] == pytest.approx(100 * 3 / 9)
    assert inc["mean_regret"] == 0 and inc["max_regret"] == 0
    assert [d["stops"] for d in res.details["t"]["incumbent"]] == [{1: 3, 2: 3}, {}, {1: 3}]
    assert res.summary["none"]["epochs_saved_pct"] == 0 and res.summary["none"]["max_regret"] == 0
    assert fc.calls == 3 * (M - 3)  # forecasts made once per (run, E), not per order
    assert res.units == "points"


def test_incumbent_regret_by_hand():
    # The model wrongly forecasts 0.6 for A (true 0.9).
    # [A,B,C]: A first always completes: regret 0, 16 epochs.
    # [B,C,A]: B, C complete (incumbent 0.7); A forecast 0.6 < 0.7: stopped: regret 20 pts.
    # [C,B,A]: C completes; B, A stopped: regret 20 pts, 16 epochs.
    res = replay(RUNS, ["incumbent"], _oracle({"A": 0.6}), orders=ORDERS, min_epochs=3)
    inc = res.summary["incumbent"]
    assert inc["mean_regret"] == pytest.approx(40 / 3, abs=1e-6)
    assert inc["max_regret"] == pytest.approx(20)
    assert inc["epochs_saved_pct"] == pytest.approx(100 * (14 + 7 + 14) / 90, abs=1e-3)
    assert inc["stopped_pct"] == pytest.approx(100 * 5 / 9, abs=1e-3)


def test_threshold_by_hand_and_order_free():
    # Bar 0.65; A forecast 0.6 (a lie), B 0.5, C 0.7: A and B stop at epoch 4
    # (min_epochs 4), C completes: 4 + 4 + 10 of 30 epochs; regret (0.9 - 0.7) x 100.
    res = replay(RUNS, ["threshold"], _oracle({"A": 0.6}), orders=7, min_epochs=4,
                 threshold=0.65, seed=3)
    thr = res.summary["threshold"]
    assert thr["epochs_saved_pct"] == pytest.approx(100 * 12 / 30)
    assert thr["mean_regret"] == pytest.approx(20) and thr["max_regret"] == pytest.approx(20)
    assert thr["stopped_pct"] == pytest.approx(100 * 2 / 3)
    assert thr["orders"] == 7


def test_nothing_finished_counts_the_best_value_seen():
    res = replay(RUNS, ["threshold"], constant(0.1), orders=1, min_epochs=3, threshold=0.95)
    # Every run stops at epoch 3; best seen: A at epoch 3 = 0.27; regret (0.9 - 0.27) x 100.
    assert res.summary["threshold"]["mean_regret"] == pytest.approx(63)
    assert res.summary["threshold"]["orders_none_finished"] == 1


def test_loss_metric_regret_in_metric_units():
    runs = [RunRecord(f"r{i}", task="l", metric="val_loss", meta={"max_epochs": 5},
                      epochs=[{"epoch": e, "val_loss": f + 1.0 / e} for e in range(1, 6)])
            for i, f in enumerate([0.5, 0.3, 0.9])]
    fc = ScriptedForecaster(lambda rec, m: {"r0": 0.7, "r1": 0.9, "r2": 1.1}[rec.run_id])
    res = replay(runs, ["threshold", "none"], fc, orders=2, min_epochs=2, threshold=0.8)
    # r1 (best final 0.5) is wrongly forecast 0.9 > 0.8 and r2 1.1: both stop at 2.
    assert res.units == "metric units"
    assert res.summary["threshold"]["mean_regret"] == pytest.approx(0.7 - 0.5)
    assert res.summary["threshold"]["epochs_saved_pct"] == pytest.approx(100 * 6 / 15)


# ------------------------------------------------------------------------ internals
def _noisy_runs(n: int, seed: int, task: str = "n") -> list[RunRecord]:
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        final = rng.uniform(0.3, 0.95)
        speed = rng.uniform(0.2, 2.0)
        vals = final * (1 - np.exp(-speed * np.arange(1, M + 1))) + rng.normal(0, .02, M)
        runs.append(RunRecord(f"{task}{i}", task=task, meta={"max_epochs": M},
                              epochs=[{"epoch": e + 1, "val_accuracy": float(np.clip(v, 0, 1))}
                                      for e, v in enumerate(vals)]))
    return runs


def _noisy_forecaster() -> ScriptedForecaster:
    def fn(rec, m):
        last = rec.epochs[-1]["val_accuracy"]
        mean = min(1.0, last * (1 + 0.5 / rec.n_epochs))
        return mean, {0.1: mean - 0.1 / rec.n_epochs, 0.5: mean, 0.9: mean + 0.1 / rec.n_epochs}
    return ScriptedForecaster(fn)


def test_incumbent_cache_matches_a_fresh_walk():
    tasks, skipped = build_tasks(_noisy_runs(15, seed=1))
    assert not skipped
    [task] = tasks
    [table] = precompute_forecasts(tasks, _noisy_forecaster(), first_epoch=2)
    pol = StopPolicy(min_epochs=3, patience=2, use_incumbent=True)
    cached = _StopEpochs(pol, task, table, first_epoch=2)
    fresh = _StopEpochs(pol, task, table, first_epoch=2, sandwich=False)
    rng = np.random.default_rng(0)
    incumbents = list(rng.uniform(0.3, 0.95, 60)) + [None] + list(task.finals)
    stops = set()
    for inc in incumbents:
        for r in range(len(task.records)):
            got = cached.get(r, inc)
            stops.add(got)
            assert got == fresh._walk(r, inc)
    assert _NO_STOP in stops and len(stops) > 2
    assert cached.decide_calls < fresh.decide_calls or fresh.decide_calls == 0


def test_forecast_table_keeps_every_quantile_level():
    fc = ScriptedForecaster(lambda rec, m: (0.5, {0.05: 0.3, 0.5: 0.5, 0.9: 0.6}))
    tasks, _ = build_tasks(RUNS)
    [table] = precompute_forecasts(tasks, fc, first_epoch=2, batch_size=4)
    got = table.get(0, 5)
    assert got.quantiles == {"0.05": 0.3, "0.5": 0.5, "0.9": 0.6}
    assert (got.mean, got.observed_epochs, got.target_epoch, got.model) == (0.5, 5, M, "scripted")
    assert table.get(0, 1) is None and fc.calls == 3 * (M - 2)


def test_forecast_table_keeps_the_metrics_bounds():
    class Bounded(ScriptedForecaster):
        def forecast_many(self, records, target_epoch):
            return [replace(f, bounds=(0.0, 1.0))
                    for f in super().forecast_many(records, target_epoch)]

    fc = Bounded(lambda rec, m: (0.95, {0.1: 0.9, 0.5: 0.95, 0.9: 0.99}))
    tasks, _ = build_tasks(RUNS)
    [table] = precompute_forecasts(tasks, fc, first_epoch=2, batch_size=4)
    got = table.get(0, 5)
    assert got.bounds == (0.0, 1.0) and got.quantile(0.999) <= 1.0


def test_median_rule_matches_optuna():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.trial import TrialState

    runs = _noisy_runs(14, seed=7)
    orders = [list(np.random.default_rng(s).permutation(14)) for s in range(3)]
    res = replay(runs, ["median"], orders=orders, min_epochs=3, details=True)
    assert res.summary["median"]["stopped_pct"] > 0
    for detail, order in zip(res.details["n"]["median"], orders, strict=True):
        study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=2))
        expected = {}
        for r in order:
            trial = study.ask()
            values = runs[r].series("val_accuracy")
            for e in range(1, M + 1):
                trial.report(float(values[e - 1]), e - 1)
                if e < M and trial.should_prune():
                    expected[int(r)] = e
                    study.tell(trial, state=TrialState.PRUNED)
                    break
            else:
                study.tell(trial, float(values[-1]))
        assert detail["stops"] == expected


def test_asha_rule_matches_ray_tune(tmp_path):
    """The replayed ASHA stops each run where Ray Tune's own ASHAScheduler does, in a
    real sequential Tune search over the same curves."""
    ray = pytest.importorskip("ray")
    tune = pytest.importorskip("ray.tune")
    from ray.tune.schedulers import ASHAScheduler

    runs = _noisy_runs(16, seed=3)
    order = list(np.random.default_rng(1).permutation(16))
    res = replay(runs, ["asha"], orders=[order], min_epochs=2, details=True)
    [detail] = res.details["n"]["asha"]
    assert 0 < len(detail["stops"]) < 16
    curves = {i: runs[i].series("val_accuracy").tolist() for i in order}

    def trainable(config: dict) -> None:
        for value in curves[config["run"]]:
            tune.report({"val_accuracy": value})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        grid = tune.Tuner(
            trainable, param_space={"run": tune.grid_search([int(r) for r in order])},
            tune_config=tune.TuneConfig(
                metric="val_accuracy", mode="max", max_concurrent_trials=1,
                scheduler=ASHAScheduler(grace_period=2, reduction_factor=4, max_t=M)),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    finally:
        ray.shutdown()
    stopped = {r.config["run"]: r.metrics["training_iteration"] for r in grid
               if r.metrics["training_iteration"] < M}
    assert stopped == detail["stops"]


def test_nan_median_is_optunas_nanpercentile():
    rng = np.random.default_rng(0)
    for k in range(1, 9):
        x = rng.normal(size=(k, 7))
        x[rng.random((k, 7)) < 0.3] = np.nan
        x[:, 0] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column
            ref = np.nanpercentile(x, 50, axis=0)
        np.testing.assert_allclose(_nan_median(x), ref, equal_nan=True)


def test_replay_arguments_are_checked():
    with pytest.raises(ConfigError, match="policy"):
        replay(RUNS, ["oracle"])
    with pytest.raises(ConfigError, match="forecaster"):
        replay(RUNS, ["incumbent"])
    with pytest.raises(ConfigError, match="orders"):
        replay(RUNS, ["none"], orders=0)
    with pytest.raises(ConfigError, match="orders"):
        replay(RUNS, ["none"], orders=[[0, 0, 1]])
    short = RunRecord("s", task="t", meta={"max_epochs": 20},
                      epochs=[{"epoch": 1, "val_accuracy": 0.1}])
    with pytest.raises(ConfigError, match="records"):
        replay([short], ["none"])
    res = replay(RUNS + [short], ["none"], orders=1)
    assert res.info["skipped"] == ["s: no val_accuracy at target epoch 20 (last epoch 1)"]


# ------------------------------------------------------------------------------ CLI
def test_replay_cli(tmp_path, capsys):
    runs = _noisy_runs(8, seed=2, task="x") + _noisy_runs(8, seed=3, task="y")
    path = tmp_path / "runs.jsonl"
    write_records(path, runs)
    code = main(["replay", str(path), "--policy", "median", "--policy", "none",
                 "--orders", "5", "--runs-per-order", "6", "--per-task"])
    out = capsys.readouterr().out
    assert code == 0
    assert "16 runs in 2 tasks, 5 orders per task, 6 runs per order" in out
    assert "epochs saved %" in out and out.count("median") == 3 and "\nx\n" in out


def test_replay_cli_bad_file(tmp_path, capsys):
    path = write_lines(tmp_path / "bad.jsonl", [_ramp("A", 0.9).to_dict(), "{not json"])
    assert main(["replay", str(path), "--policy", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("earlystop-predict replay: error:") and "line 2" in err
    assert main(["replay", str(tmp_path / "nope.jsonl"), "--policy", "none"]) == 2
    assert "No such file" in capsys.readouterr().err
