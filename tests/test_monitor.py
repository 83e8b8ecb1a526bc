"""ForecastMonitor with a ScriptedForecaster: stops, counters, state and resume."""

from __future__ import annotations

import json
import math

import pytest
from conftest import by_epoch, constant, feed

from earlystop_predict.errors import ConfigError, MetricNotFoundError, RecordError
from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.ledger import Ledger
from earlystop_predict.policy.monitor import STATE_VERSION, ForecastMonitor
from earlystop_predict.records.record import RunRecord, dumps

CURVE = [0.30, 0.40, 0.45, 0.50, 0.52, 0.55, 0.56, 0.58]


def _json(state: dict) -> dict:
    """A state through strict JSON, as a checkpoint stores it."""
    return json.loads(json.dumps(state, allow_nan=False))


# ----------------------------------------------------------------------------- stopping
def test_stops_at_min_epochs_when_forecast_is_poor(monitor_factory):
    mon = monitor_factory(min_epochs=3)
    decisions = feed(mon, CURVE)
    assert [d.stop for d in decisions] == [False, False, True]
    assert mon.stopped == {"epoch": 3, "reason": "forecast q0.95 0.5 < threshold 0.9"}
    assert mon.record.stopped == mon.stopped
    assert mon.last_decision is decisions[-1]
    assert decisions[0].reason.endswith("min_epochs 3 not reached")


def test_keeps_a_promising_run(monitor_factory):
    mon = monitor_factory(model=constant(0.95))
    decisions = feed(mon, CURVE)
    assert len(decisions) == len(CURVE) and not any(d.stop for d in decisions)
    assert mon.stopped is None and mon.record.stopped is None


def test_forecaster_sees_the_run_so_far(monitor_factory):
    seen = []

    def fn(rec: RunRecord, target: int) -> float:
        seen.append((rec.n_epochs, rec.last_epoch, target, rec.final_value()))
        return 0.95

    mon = monitor_factory(model=ScriptedForecaster(fn), target_epoch=12)
    feed(mon, CURVE[:3])
    assert seen == [(1, 1, 12, 0.30), (2, 2, 12, 0.40), (3, 3, 12, 0.45)]


def test_no_forecast_at_or_after_target_epoch(monitor_factory):
    model = constant(0.1)
    mon = monitor_factory(model=model, target_epoch=3, min_epochs=3)
    decisions = feed(mon, CURVE[:5], until_stop=False)
    assert model.calls == 2
    assert [d.reason for d in decisions[2:]] == ["no forecast: target epoch reached"] * 3
    assert not any(d.stop for d in decisions)


def test_patience_needs_consecutive_poor_forecasts(monitor_factory):
    # poor, good, poor, poor: the good forecast at epoch 2 resets the streak.
    model = by_epoch({1: 0.5, 2: 0.95, 3: 0.5, 4: 0.5, 5: 0.5})
    mon = monitor_factory(model=model, min_epochs=1, patience=2)
    decisions = feed(mon, CURVE)
    assert [d.stop for d in decisions] == [False, False, False, True]
    assert [d.poor for d in decisions] == [True, False, True, True]
    assert decisions[2].reason.endswith("patience 1/2")


def test_patience_streak_counts_during_min_epochs(monitor_factory):
    mon = monitor_factory(min_epochs=3, patience=3)
    decisions = feed(mon, CURVE)
    assert len(decisions) == 3 and decisions[-1].stop


def test_dry_run_records_but_never_stops(monitor_factory):
    mon = monitor_factory(dry_run=True)
    decisions = feed(mon, CURVE)
    assert len(decisions) == len(CURVE)
    assert not any(d.stop for d in decisions)
    assert [d.would_stop for d in decisions] == [False, False] + [True] * 6
    assert mon.stopped is None
    assert [f.get("would_stop", False) for f in mon.record.forecasts] == \
        [False, False] + [True] * 6
    assert all(d.log_items()["esp/stop"] == 0.0 for d in decisions)


def test_incumbent_needs_a_ledger_and_is_none_without(monitor_factory):
    mon = monitor_factory(threshold=None, study="s", min_delta=None)  # no bar at all
    assert not any(d.stop for d in feed(mon, CURVE))


# ----------------------------------------------------------------------------- divergence
def test_nan_loss_stops_at_once(monitor_factory):
    model = constant(0.95)
    mon = monitor_factory(model=model, min_epochs=5)
    d1 = mon.update(1, {"val_accuracy": 0.3, "loss": 1.2})
    d2 = mon.update(2, {"val_accuracy": 0.31, "loss": float("nan")})
    assert not d1.stop
    assert d2.stop and d2.reason == "diverged" and d2.forecast is None
    assert model.calls == 1                       # no forecast from a diverged run
    assert mon.stopped == {"epoch": 2, "reason": "diverged"}
    assert mon.record.epochs[-1]["train_loss"] is None
    assert math.isnan(d2.log_items()["esp/forecast_mean"])


@pytest.mark.parametrize("metrics", [
    {"val_accuracy": float("nan")},
    {"val_accuracy": 0.3, "val_loss": float("inf")},
    {"val_accuracy": 0.3, "eval_loss": float("-inf")},
])
def test_nan_or_inf_in_target_or_loss_diverges(monitor_factory, metrics):
    assert monitor_factory(min_epochs=5).update(1, metrics).reason == "diverged"


def test_nan_in_other_metric_is_only_missing(monitor_factory):
    mon = monitor_factory(model=constant(0.95))
    d = mon.update(1, {"val_accuracy": 0.3, "val_f1": float("nan"), "lr": None})
    assert not d.stop and d.reason != "diverged"
    assert mon.record.epochs[0]["val_f1"] is None


def test_divergence_ignored_when_asked(monitor_factory):
    mon = monitor_factory(stop_on_divergence=False, model=constant(0.95))
    d = mon.update(1, {"val_accuracy": 0.3, "loss": float("nan")})
    assert not d.stop and mon.stopped is None


# ----------------------------------------------------------------------------- metrics
def test_missing_metric_lists_keys_seen(monitor_factory):
    mon = monitor_factory()
    with pytest.raises(MetricNotFoundError) as err:
        mon.update(1, {"loss": 0.7, "accuracy": 0.6, "val_loss": 0.8})
    assert err.value.metric == "val_accuracy"
    assert err.value.available == ["accuracy", "loss", "val_loss"]
    assert str(err.value) == ("metric 'val_accuracy' was not logged; "
                              "available keys: accuracy, loss, val_loss")
    assert isinstance(err.value, KeyError)
    assert mon.record.epochs == []                # nothing half-recorded


def test_missing_metric_with_no_keys(monitor_factory):
    with pytest.raises(MetricNotFoundError, match=r"available keys: \(none\)"):
        monitor_factory().update(1, {})


@pytest.mark.parametrize(("monitor", "logged"), [
    ("val_acc", "val_acc"), ("eval_accuracy", "eval_accuracy"),
    ("val_accuracy", "val_sparse_categorical_accuracy"), ("val_acc", "val_accuracy"),
])
def test_metric_aliases_are_understood(monitor_factory, monitor, logged):
    mon = monitor_factory(monitor=monitor, model=constant(0.95))
    mon.update(1, {logged: 0.4, "loss": 1.0, "lr": 0.01})
    assert mon.metric == "val_accuracy" and mon.record.metric == "val_accuracy"
    row = mon.record.epochs[0]
    assert row["val_accuracy"] == 0.4 and row["train_loss"] == 1.0 and row["lr"] == 0.01
    assert row["epoch"] == 1 and row["time"] >= 0


def test_loss_monitor_defaults_to_min_mode(monitor_factory):
    mon = monitor_factory(monitor="eval_loss", threshold=0.5, model=constant(0.8))
    assert mon.mode == "min" and mon.record.mode == "min" and mon.metric == "val_loss"
    decisions = feed(mon, [1.0, 0.9, 0.85])
    assert decisions[-1].stop and decisions[-1].reason == "forecast q0.05 0.8 > threshold 0.5"


def test_string_values_and_logged_epoch_are_dropped(monitor_factory):
    mon = monitor_factory(model=constant(0.95))
    mon.update(1, {"val_accuracy": 0.4, "epoch": 0.0, "note": "x"})
    assert mon.record.epochs[0]["epoch"] == 1 and "note" not in mon.record.epochs[0]


def test_record_is_a_valid_run_record(monitor_factory):
    mon = monitor_factory(hparams={"lr": 0.01}, meta={"n_train": 500}, task="unit")
    feed(mon, CURVE)
    rec = RunRecord.from_dict(json.loads(dumps(mon.record.to_dict())))
    assert rec.run_id == "run-1" and rec.task == "unit"
    assert rec.hparams == {"learning_rate": 0.01}
    assert rec.meta == {"train_size": 500, "max_epochs": 20}
    assert rec.stopped == {"epoch": 3, "reason": "forecast q0.95 0.5 < threshold 0.9"}
    assert [f["at_epoch"] for f in rec.forecasts] == [1, 2, 3]
    assert rec.forecasts[-1] == {"at_epoch": 3, "target_epoch": 20, "mean": 0.5,
                                 "quantiles": {q: 0.5 for q in
                                               ("0.1", "0.25", "0.5", "0.75", "0.9")},
                                 "model": "scripted", "stop": True,
                                 "reason": "forecast q0.95 0.5 < threshold 0.9"}


def test_end_without_ledger_is_harmless_and_idempotent(monitor_factory):
    mon = monitor_factory()
    mon.end()                     # never begun: nothing to close
    feed(mon, CURVE)
    mon.end("stopped")
    mon.end()
    assert mon.finished


# ----------------------------------------------------------------------------- begin / reset
def test_begin_resets_between_runs(monitor_factory):
    mon = monitor_factory(run_id=None, patience=2, min_epochs=1)
    mon.begin()
    feed(mon, CURVE)
    first_id = mon.record.run_id
    assert mon.stopped is not None and mon.poor_streak == 2
    mon.end()
    mon.begin()
    assert mon.record.epochs == [] and mon.record.forecasts == []
    assert mon.stopped is None and mon.record.stopped is None
    assert mon.poor_streak == 0 and mon.last_decision is None and not mon.finished
    assert mon.record.run_id != first_id
    decisions = feed(mon, CURVE)
    assert [d.epoch for d in decisions] == [1, 2] and decisions[-1].stop


def test_fixed_run_id_is_kept_across_begin(monitor_factory):
    mon = monitor_factory(run_id="fixed")
    mon.begin()
    mon.begin()
    assert mon.record.run_id == "fixed"


def test_update_without_begin_begins(monitor_factory):
    mon = monitor_factory()
    assert not mon.update(1, {"val_accuracy": 0.3}).stop
    assert mon.target_epoch == 20 and mon.record.meta["max_epochs"] == 20


def test_user_hparams_and_meta_win_over_adapter_ones(monitor_factory):
    mon = monitor_factory(hparams={"learning_rate": 0.2, "momentum": 0.9},
                          meta={"framework": "torch"})
    mon.begin(hparams={"lr": 0.1, "bs": 32, "optimizer": "AdamW"},
              meta={"num_train_epochs": 30, "framework": "keras"})
    assert mon.record.hparams == {"learning_rate": 0.2, "batch_size": 32,
                                  "optimizer": "adamw", "momentum": 0.9}
    assert mon.record.meta == {"max_epochs": 30, "framework": "torch"}


# ----------------------------------------------------------------------------- target_epoch
def test_target_epoch_defaults_from_meta_max_epochs(monitor_factory):
    mon = monitor_factory(target_epoch=None)
    mon.begin(meta={"num_epochs": 30})
    assert mon.target_epoch == 30


def test_target_epoch_from_user_meta(monitor_factory):
    mon = monitor_factory(target_epoch=None, meta={"max_epochs": 40})
    mon.begin()
    assert mon.target_epoch == 40


def test_target_epoch_from_adapter_argument(monitor_factory):
    mon = monitor_factory(target_epoch=None)
    mon.begin(target_epoch=25)
    assert mon.target_epoch == 25 and mon.record.meta["max_epochs"] == 25


def test_user_target_epoch_wins(monitor_factory):
    mon = monitor_factory(target_epoch=12)
    mon.begin(meta={"max_epochs": 30}, target_epoch=30)
    assert mon.target_epoch == 12
    assert mon.record.meta["max_epochs"] == 30


def test_unknown_target_epoch_is_a_config_error(monitor_factory):
    mon = monitor_factory(target_epoch=None)
    with pytest.raises(ConfigError) as err:
        mon.begin()
    assert err.value.arg == "target_epoch" and "max_epochs" in str(err.value)
    with pytest.raises(ConfigError, match="target_epoch"):
        monitor_factory(target_epoch=None).update(1, {"val_accuracy": 0.5})


def test_target_epoch_from_meta_is_range_checked(monitor_factory):
    mon = monitor_factory(target_epoch=None, min_epochs=5)
    with pytest.raises(ConfigError, match="target_epoch"):
        mon.begin(meta={"max_epochs": 3})


@pytest.mark.parametrize("target", [0, 1, 2, -5, 2.5, "20", True])
def test_bad_target_epoch_rejected(monitor_factory, target):
    with pytest.raises(ConfigError) as err:
        monitor_factory(target_epoch=target)
    assert err.value.arg == "target_epoch" and repr(target) in str(err.value)


@pytest.mark.parametrize(("kwargs", "arg"), [
    ({"monitor": ""}, "monitor"), ({"monitor": None}, "monitor"),
    ({"mode": "up"}, "mode"), ({"confidence": 2.0}, "confidence"),
    ({"min_epochs": 0}, "min_epochs"), ({"patience": 0}, "patience"),
    ({"threshold": float("nan")}, "threshold"),
])
def test_bad_init_args_rejected(monitor_factory, kwargs, arg):
    with pytest.raises(ConfigError) as err:
        monitor_factory(**kwargs)
    assert err.value.arg == arg


# ----------------------------------------------------------------------------- state
def test_state_dict_is_versioned_strict_json(monitor_factory):
    mon = monitor_factory(patience=3, min_epochs=1)
    feed(mon, CURVE[:2], loss=[1.0, float("nan")], until_stop=False)
    state = _json(mon.state_dict())
    assert state["version"] == STATE_VERSION
    assert state["target_epoch"] == 20 and state["stopped"] is not None
    assert state["record"]["epochs"][1]["train_loss"] is None


def _interrupted(monitor_factory, at: int, **kwargs):
    """A monitor run to epoch ``at``, then its state through JSON into a fresh one."""
    first = monitor_factory(**kwargs)
    feed(first, CURVE[:at], until_stop=False)
    state = _json(first.state_dict())
    second = monitor_factory(**kwargs)
    second.load_state_dict(state)
    second.begin(resume=True)
    return first, second


def test_resume_continues_like_an_uninterrupted_run(monitor_factory):
    kwargs = {"min_epochs": 1, "patience": 4}
    whole = monitor_factory(**kwargs)
    expected = feed(whole, CURVE)
    first, second = _interrupted(monitor_factory, 2, **kwargs)
    assert second.poor_streak == 2
    rest = feed(second, CURVE[2:], start=3)
    assert [(d.epoch, d.stop, d.reason) for d in rest] == \
        [(d.epoch, d.stop, d.reason) for d in expected[2:]]
    assert second.stopped == whole.stopped == {"epoch": 4, "reason": expected[-1].reason}
    assert second.record.epoch_numbers().tolist() == [1, 2, 3, 4]
    assert [f["at_epoch"] for f in second.record.forecasts] == [1, 2, 3, 4]


def test_load_state_dict_restores_progress_not_init_args(monitor_factory):
    first = monitor_factory(target_epoch=None, meta={"max_epochs": 30})
    first.begin()
    feed(first, CURVE[:2])
    state = _json(first.state_dict())
    second = monitor_factory(target_epoch=None, patience=5)
    second.load_state_dict(state)
    assert second.target_epoch == 30               # restored progress
    assert second.policy.patience == 5             # init args untouched
    pinned = monitor_factory(target_epoch=15)
    pinned.load_state_dict(state)
    assert pinned.target_epoch == 15               # a given target is an init arg


def test_load_state_dict_restores_stop(monitor_factory):
    first = monitor_factory()
    feed(first, CURVE)
    second = monitor_factory()
    second.load_state_dict(_json(first.state_dict()))
    assert second.stopped == first.stopped == second.record.stopped
    assert second.record.to_dict() == first.record.to_dict()


def test_replayed_epoch_after_resume_replaces_the_tail(monitor_factory):
    # Saved after epoch 4, but the framework resumes from a checkpoint of epoch 2.
    _, mon = _interrupted(monitor_factory, 4, model=constant(0.95))
    assert mon.record.last_epoch == 4
    mon.update(3, {"val_accuracy": 0.9, "val_loss": 0.1})
    assert mon.record.epoch_numbers().tolist() == [1, 2, 3]
    assert mon.record.epochs[-1]["val_accuracy"] == 0.9
    assert mon.record.epochs[1]["val_accuracy"] == CURVE[1]
    assert [f["at_epoch"] for f in mon.record.forecasts] == [1, 2, 3]
    mon.update(4, {"val_accuracy": 0.91})
    assert mon.record.epoch_numbers().tolist() == [1, 2, 3, 4]
    mon.record.validate()


def test_state_dict_is_a_snapshot(monitor_factory):
    first = monitor_factory(model=constant(0.95))
    feed(first, CURVE[:2])
    state = first.state_dict()
    saved = json.dumps(state)
    first.update(3, {"val_accuracy": 0.5})
    assert json.dumps(state) == saved                 # later epochs do not leak in
    second = monitor_factory(model=constant(0.95))
    second.load_state_dict(state)                     # in memory, no JSON between
    second.begin(resume=True)
    second.update(3, {"val_accuracy": 0.7})
    second.update(4, {"val_accuracy": 0.8})
    assert json.dumps(state) == saved
    assert first.record.last_epoch == 3 and first.record.epochs[-1]["val_accuracy"] == 0.5


def test_update_after_load_state_dict_keeps_progress(monitor_factory):
    # An adapter that restores state and then reports the next epoch, without begin().
    first = monitor_factory(model=constant(0.95))
    feed(first, CURVE[:2])
    second = monitor_factory(model=constant(0.95))
    second.load_state_dict(_json(first.state_dict()))
    second.update(3, {"val_accuracy": 0.5})
    assert second.record.epoch_numbers().tolist() == [1, 2, 3]


@pytest.mark.parametrize("version", [None, 0, STATE_VERSION + 1])
def test_unknown_state_version_rejected(monitor_factory, version):
    state = monitor_factory().state_dict()
    state["version"] = version
    with pytest.raises(ConfigError, match="version"):
        monitor_factory().load_state_dict(state)


def test_monitor_class_is_exported():
    import earlystop_predict

    assert earlystop_predict.ForecastMonitor is ForecastMonitor


# ----------------------------------------------------------------------------- with a ledger
# These use the real SQLite ledger (earlystop_predict/ledger.py).


def _ledger_record(path, run_id: str) -> RunRecord:
    with Ledger(path) as led:
        (rec,) = [r for r in led.records() if r.run_id == run_id]
    return rec


def test_ledger_holds_epochs_forecasts_and_stop(monitor_factory, tmp_path):
    path = tmp_path / "ledger.db"
    mon = monitor_factory(ledger=path, study="s", hparams={"lr": 0.1}, task="unit")
    feed(mon, CURVE, val_loss=[1.0] * len(CURVE))
    mon.end()
    rec = _ledger_record(path, "run-1")
    assert rec.epochs == mon.record.epochs
    assert rec.forecasts == mon.record.forecasts
    assert rec.stopped == mon.stopped == {"epoch": 3,
                                          "reason": "forecast q0.95 0.5 < threshold 0.9"}
    assert rec.hparams == {"learning_rate": 0.1} and rec.task == "unit"
    assert rec.extra["status"] == "stopped" and rec.extra["study"] == "s"
    assert rec.extra["target_epoch"] == 20


def test_ledger_instance_is_used_as_given(monitor_factory, tmp_path):
    with Ledger(tmp_path / "l.db") as led:
        mon = monitor_factory(ledger=led, model=constant(0.95))
        feed(mon, CURVE[:4])
        mon.end()
        assert mon.ledger is led
        (run,) = led.runs()
        assert run["status"] == "completed" and run["final_value"] == CURVE[3]
        assert run["final_epoch"] == 4 and run["n_epochs"] == 4


def test_incumbent_from_the_study_stops_a_worse_run(tmp_path, monitor_factory):
    path = tmp_path / "ledger.db"
    best = monitor_factory(ledger=path, study="s", threshold=None, run_id="best",
                           model=constant(0.95))
    feed(best, [0.5, 0.7, 0.8])
    best.end()                                     # completed at 0.8: the incumbent
    other_study = monitor_factory(ledger=path, study="t", threshold=None, run_id="t1",
                                  min_delta=None)
    assert not any(d.stop for d in feed(other_study, CURVE))
    worse = monitor_factory(ledger=path, study="s", threshold=None, run_id="worse")
    decisions = feed(worse, CURVE)
    assert decisions[-1].stop and decisions[-1].epoch == 3
    assert decisions[-1].reason == "forecast q0.95 0.5 < incumbent 0.8"


def test_a_stopped_run_counts_with_what_it_reached(tmp_path, monitor_factory):
    # A stopped run is censored evidence: the best value it reached is reached (as replay
    # counts it), so it is a bar for the runs after it.
    path = tmp_path / "ledger.db"
    stopped = monitor_factory(ledger=path, study="s", run_id="a")     # stops at 3 (0.45)
    feed(stopped, CURVE)
    stopped.end()
    nxt = monitor_factory(ledger=path, study="s", threshold=None, run_id="b",
                          model=constant(0.4), min_delta=None, keep_top=None)
    decisions = feed(nxt, CURVE)
    assert decisions[-1].stop and decisions[-1].epoch == 3
    assert decisions[-1].reason == "forecast q0.95 0.4 < incumbent 0.45"


def test_dry_run_with_ledger_completes_and_records_would_stop(monitor_factory, tmp_path):
    path = tmp_path / "ledger.db"
    mon = monitor_factory(ledger=path, dry_run=True)
    feed(mon, CURVE)
    mon.end()
    rec = _ledger_record(path, "run-1")
    assert rec.extra["status"] == "completed" and rec.stopped is None
    assert [f.get("would_stop", False) for f in rec.forecasts] == [False, False] + [True] * 6


def test_resume_with_replay_keeps_ledger_and_record_in_step(monitor_factory, tmp_path):
    path = tmp_path / "ledger.db"
    first = monitor_factory(ledger=path, model=constant(0.95))
    feed(first, CURVE[:4])
    state = _json(first.state_dict())
    second = monitor_factory(ledger=path, model=constant(0.95))
    second.load_state_dict(state)
    second.begin(resume=True)
    second.update(3, {"val_accuracy": 0.9})        # replayed from a checkpoint at epoch 2
    second.update(4, {"val_accuracy": 0.91})
    second.end()
    rec = _ledger_record(path, "run-1")
    assert rec.epochs == second.record.epochs
    assert [r["val_accuracy"] for r in rec.epochs] == [0.30, 0.40, 0.9, 0.91]
    assert [f["at_epoch"] for f in rec.forecasts] == [1, 2, 3, 4]
    assert rec.extra["status"] == "completed"


def test_each_begin_is_a_new_run_in_the_ledger(monitor_factory, tmp_path):
    path = tmp_path / "ledger.db"
    mon = monitor_factory(ledger=path, run_id=None)
    for _ in range(2):
        mon.begin()
        feed(mon, CURVE)
        mon.end()
    with Ledger(path) as led:
        runs = led.runs()
    assert len(runs) == 2 and len({r["run_id"] for r in runs}) == 2
    assert all(r["status"] == "stopped" and r["n_epochs"] == 3 for r in runs)


def test_override_replaces_the_decision_in_record_and_stop_state(monitor_factory) -> None:
    mon = monitor_factory(min_epochs=1, threshold=0.99)
    mon.begin(meta={"max_epochs": 20})
    with pytest.raises(RuntimeError):
        monitor_factory().override(True, "too early")
    assert mon.update(1, {"val_accuracy": 0.3}).stop
    d = mon.override(False, "rank 0: keep going")
    assert not d.stop and mon.stopped is None and mon.record.stopped is None
    assert mon.record.forecasts[-1]["stop"] is False
    assert mon.record.forecasts[-1]["reason"] == "rank 0: keep going"
    d = mon.override(True, "rank 0: stop")
    assert mon.stopped == {"epoch": 1, "reason": "rank 0: stop"} == mon.record.stopped
    assert d.forecast is not None and len(mon.record.forecasts) == 1


# ----------------------------------------------------------------------------- issue 12
def test_a_percent_valued_accuracy_is_refused_before_it_is_recorded(monitor_factory):
    mon = monitor_factory()
    feed(mon, [0.30])
    with pytest.raises(RecordError) as info:
        mon.update(2, {"val_accuracy": 40.6})
    assert "val_accuracy" in str(info.value) and "40.6" in str(info.value)
    assert "divide percents by 100" in str(info.value)
    assert [r["epoch"] for r in mon.record.epochs] == [1]   # nothing out of range is held
    with pytest.raises(RecordError, match="train_accuracy"):
        mon.update(2, {"val_accuracy": 0.4, "train_accuracy": -0.5})


def test_a_study_whose_first_run_logged_percents_does_not_stop_the_next(monitor_factory,
                                                                          tmp_path):
    path = tmp_path / "l.db"
    first = monitor_factory(threshold=None, ledger=path, study="pct", run_id="pct-1")
    with pytest.raises(RecordError):
        feed(first, [40.6])
    first.end("failed")
    with Ledger(path) as led:   # a percent run recorded as completed by an older version
        led.start_run(RunRecord("old", epochs=[{"epoch": 1, "val_accuracy": 80.0}]),
                      study="pct")
        led.log_epoch("old", {"epoch": 1, "val_accuracy": 80.0})
        led.finish_run("old", final_value=80.0, final_epoch=1)
        assert led.best_final("pct", "val_accuracy", "max") is None
    correct = monitor_factory(threshold=None, ledger=path, study="pct", run_id="pct-2",
                              model=constant(0.78), min_delta=None)
    decisions = feed(correct, [0.5, 0.6, 0.65, 0.7])
    assert correct.incumbent is None and not any(d.stop for d in decisions)
    correct.end()
    third = monitor_factory(threshold=None, ledger=path, study="pct", run_id="pct-3")
    third.begin()
    assert third.incumbent == pytest.approx(0.7)   # the correct run is the bar, not 80


def test_resume_from_an_earlier_epoch_rebuilds_patience(monitor_factory):
    # Regression (issue 12.2): poor from epoch 3 on, patience 3: the run stops at 5.
    def make():
        return monitor_factory(model=by_epoch({1: 0.95, 2: 0.95}, default=0.2), patience=3,
                               min_epochs=1)

    whole = make()
    assert feed(whole, CURVE)[-1].epoch == 5
    first = make()
    feed(first, CURVE[:4])                       # state saved at epoch 4 (streak 2)
    state = _json(first.state_dict())
    resumed = make()
    resumed.load_state_dict(state)
    decisions = feed(resumed, CURVE[2:], start=3)   # replayed from epoch 3
    assert decisions[-1].epoch == 5 and resumed.stopped["epoch"] == 5
    assert [f["at_epoch"] for f in resumed.record.forecasts] == [1, 2, 3, 4, 5]


def test_best_so_far_respects_the_mode_and_is_rebuilt_on_replay(monitor_factory):
    mon = monitor_factory(monitor="val_loss", threshold=None, model=constant(0.5))
    feed(mon, [0.9, 0.5, 0.7], until_stop=False)
    assert (mon.best, mon.best_epoch) == (0.5, 2)
    mon.update(2, {"val_loss": 0.8})             # a replay from epoch 2
    assert (mon.best, mon.best_epoch) == (0.8, 2)


def test_observe_study_sets_the_incumbent_unless_switched_off(monitor_factory):
    mon = monitor_factory()
    assert mon.observe_study([0.5, None, float("nan"), 0.7, 40.6]) == pytest.approx(0.7)
    assert mon.incumbent == pytest.approx(0.7)
    off = monitor_factory(use_incumbent=False)
    assert off.observe_study([0.7]) is None and off.incumbent is None


def test_log_items_at_the_target_are_the_observation(monitor_factory):
    mon = monitor_factory(target_epoch=3, model=constant(0.95))
    feed(mon, [0.3, 0.4, 0.45])
    items = mon.log_items()
    assert items["esp/forecast_mean"] == items["esp/forecast_q10"] == 0.45
    assert items["esp/forecast_q90"] == 0.45 and items["esp/stop"] == 0.0


def test_min_delta_reaches_the_policy_and_decide_gets_the_best_so_far(monitor_factory):
    from earlystop_predict.policy.stop import StopPolicy

    seen = []

    class Spy(StopPolicy):
        def decide(self, forecast, **kw):
            seen.append(kw["best"])
            return super().decide(forecast, **kw)

    mon = monitor_factory(min_delta=0.02, threshold=None, model=constant(0.9))
    assert mon.policy.min_delta == 0.02
    mon.policy = Spy(min_delta=0.02)
    feed(mon, [0.3, 0.5, 0.4, 0.6], until_stop=False)
    assert seen == [0.3, 0.5, 0.5, 0.6]
    low = monitor_factory(monitor="val_loss", threshold=None, model=constant(0.1))
    low.policy = Spy(mode="min")
    seen.clear()
    feed(low, [0.9, 0.5, 0.7], until_stop=False)
    assert seen == [0.9, 0.5, 0.5]


def test_state_file_is_the_state_written_atomically_only_when_it_changed(monitor_factory,
                                                                         tmp_path):
    from earlystop_predict.integrations._state import StateFile

    mon = monitor_factory(dry_run=True)
    state = StateFile(tmp_path / "s.json")
    assert state.load() is None
    for epoch, value in enumerate([0.3, 0.4, float("nan"), 0.5], start=1):
        mon.update(epoch, {"val_accuracy": value, "val_loss": 1.0})
        assert state.save(mon.state_dict(snapshot=False))
        assert state.load() == json.loads(dumps(mon.state_dict()))
    inode = (tmp_path / "s.json").stat().st_ino
    assert not state.save(mon.state_dict(snapshot=False))       # unchanged: not written
    assert (tmp_path / "s.json").stat().st_ino == inode
    mon.update(2, {"val_accuracy": 0.45})                         # a replay: rows replaced
    assert state.save(mon.state_dict(snapshot=False))
    assert state.load() == json.loads(dumps(mon.state_dict()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]   # no temporary left


def test_state_file_appends_one_line_an_epoch_and_survives_a_torn_one(monitor_factory,
                                                                      tmp_path):
    from earlystop_predict.integrations._state import StateFile

    mon = monitor_factory(dry_run=True)
    path = tmp_path / "s.json"
    state = StateFile(path)
    saved = []
    for epoch in range(1, 7):
        mon.update(epoch, {"val_accuracy": 0.1 * epoch, "val_loss": 1.0})
        state.save(mon.state_dict(snapshot=False))
        saved.append(json.loads(dumps(mon.state_dict())))
    lines = path.read_text().splitlines()
    assert len(lines) == 6                           # the whole state once, then one line each
    assert all(len(ln) < len(lines[0]) for ln in lines[2:])
    assert StateFile(path).load() == saved[-1]
    with open(path, "a") as fh:                      # a crash while appending
        fh.write('{"+": {"record.epochs": [{"epo')
    assert StateFile(path).load() == saved[-1]
    path.write_text("\n".join(lines[:4]) + "\n")    # the journal as of epoch 4
    assert StateFile(path).load() == saved[3]


def test_state_file_reads_a_single_object_state(monitor_factory, tmp_path):
    from earlystop_predict.integrations._state import StateFile

    mon = monitor_factory(dry_run=True)
    for epoch in (1, 2):
        mon.update(epoch, {"val_accuracy": 0.3})
    old = json.loads(dumps(mon.state_dict()))
    (tmp_path / "s.json").write_text(json.dumps(old))  # as 0.1 wrote it, one object
    assert StateFile(tmp_path / "s.json").load() == old


# ----------------------------------------------------------------------- keep_top
def test_keep_top_reads_the_study_from_the_ledger(tmp_path):
    path = tmp_path / "l.db"
    # Two earlier runs of the study: one slow starter that ended best, one fast one.
    for run_id, values in (("slow", [0.30, 0.35, 0.40, 0.90]), ("fast", [0.6, 0.7, 0.7, 0.7])):
        m = ForecastMonitor(target_epoch=4, study="s", ledger=path, run_id=run_id,
                            min_delta=None, model=constant(1.0))
        feed(m, values)
        m.end()
    kw = {"target_epoch": 4, "study": "s", "ledger": path, "min_delta": None,
          "model": constant(0.5)}
    kept = ForecastMonitor(run_id="b", keep_top=0.5, **kw)
    decisions = feed(kept, [0.32, 0.36, 0.40])
    # epoch 3: best 0.40 against the study's 0.40 and 0.70: the median cutoff 0.55.
    assert decisions[-1].stop
    assert kept.stopped["reason"] == "forecast q0.95 0.5 < incumbent 0.9"
    # epoch 2: best 0.36 >= the cutoff of 0.35 and 0.70 at top 100 %: kept at epoch 3 too.
    kept = ForecastMonitor(run_id="c", keep_top=1.0, **kw)
    d = feed(kept, [0.32, 0.36, 0.40])[-1]
    assert not d.stop and d.reason == ("forecast q0.95 0.5 < incumbent 0.9; kept: best 0.4 "
                                       "in the study's top 1 at this epoch (cutoff 0.4)")


def test_a_flat_run_waits_for_the_rung_and_a_climbing_one_gets_credit(tmp_path):
    """A ledger study: a run that sits at its start is judged at ASHA's rungs (3, 12)
    against the study's runs, not by a forecast that cannot see it jump; a climbing run
    is credited part of its slope against the incumbent. The ledger says why."""
    path = tmp_path / "l.db"
    for run_id, values in (("a", [0.5, 0.5, 0.5, 0.6, 0.9] + [0.9] * 15),
                           ("b", [0.4] * 20)):
        m = ForecastMonitor(target_epoch=20, study="s", ledger=path, run_id=run_id,
                            model=constant(1.0))
        feed(m, values)
        m.end()
    kw = {"target_epoch": 20, "study": "s", "ledger": path, "min_delta": None,
          "model": constant(0.6)}  # q0.95 0.6 against the incumbent 0.9: doomed
    # At epoch 3 the study's runs are at 0.5 and 0.4: the top quarter from 0.475.
    flat = ForecastMonitor(run_id="flat", **kw)
    decisions = feed(flat, [0.45, 0.45, 0.45])
    assert [d.stop for d in decisions] == [False, False, True]
    assert flat.stopped["reason"] == (
        "flat: best 0.45 within flat_delta 0.05 of its first value 0.45; rung 3: 0.45 "
        "below the study's top quarter at this epoch (cutoff 0.475)")
    # Flat at 0.55, in the top quarter at rung 3: not stopped until it leaves its start.
    late = ForecastMonitor(run_id="late", **kw)
    decisions = feed(late, [0.55, 0.55, 0.55, 0.55, 0.55, 0.62])
    assert [d.stop for d in decisions] == [False] * 5 + [True]
    assert decisions[2].reason.endswith(
        "rung 3: 0.55 in the study's top quarter (cutoff 0.475)")
    assert decisions[4].reason.startswith("flat: best 0.55 within flat_delta 0.05")
    # 0.05 x (0.62 - 0.55) / 3 an epoch x 14 epochs left: 0.0163 of credit.
    assert late.stopped["reason"] == "forecast q0.95 0.6 + climb credit 0.0163 < incumbent 0.9"
    # Without flat_delta (and keep_top, which would keep it too) the forecast stops it
    # at epoch 3.
    plain = ForecastMonitor(run_id="plain", flat_delta=None, keep_top=None, **kw)
    assert len(feed(plain, [0.55, 0.55, 0.55, 0.55])) == 3 and plain.stopped
    # A run climbing 0.1 an epoch: 0.05 x 0.1 x 16 epochs left = 0.08 of credit at
    # epoch 4; 0.6 + 0.08 still short of 0.9: stopped, and the reason shows the credit.
    climb = ForecastMonitor(run_id="climb", min_epochs=4, **kw)
    feed(climb, [0.1, 0.2, 0.3, 0.4])
    assert climb.stopped["reason"] == "forecast q0.95 0.6 + climb credit 0.08 < incumbent 0.9"
    kw["model"] = constant(0.83)  # 0.83 + 0.08 >= 0.9: kept while it climbs
    climb = ForecastMonitor(run_id="climb2", min_epochs=4, **kw)
    assert not any(d.stop for d in feed(climb, [0.1, 0.2, 0.3, 0.4]))
    with Ledger(path) as led:
        rows = {r.run_id: r for r in led.records("s")}
    assert rows["late"].stopped["epoch"] == 6 and rows["flat"].stopped["epoch"] == 3
    assert "rung 3: 0.55 in the study's top quarter" in rows["late"].forecasts[2]["reason"]


def test_the_rung_rule_compares_values_at_the_rung_as_asha_does(tmp_path):
    """ASHA records each trial's value at a rung and cuts below the top quarter of
    those: a noisy study whose best so far at epoch 3 (0.6, 0.58) is above its values
    there (0.5, 0.5) does not stop a flat run at 0.52, which a comparison of bests
    would; a run whose best came early and whose value at the rung is 0.49 stops."""
    path = tmp_path / "l.db"
    for run_id, values in (("a", [0.6, 0.4, 0.5] + [0.9] * 17),
                           ("b", [0.58, 0.42, 0.5] + [0.8] * 17)):
        m = ForecastMonitor(target_epoch=20, study="s", ledger=path, run_id=run_id,
                            model=constant(1.0))
        feed(m, values)
        m.end()
    kw = {"target_epoch": 20, "study": "s", "ledger": path, "min_delta": None,
          "model": constant(0.6)}  # doomed by its forecast against the incumbent 0.9
    steady = ForecastMonitor(run_id="steady", **kw)
    decisions = feed(steady, [0.52, 0.52, 0.52, 0.52])
    assert not any(d.stop for d in decisions[:3])
    assert decisions[2].reason.endswith("rung 3: 0.52 in the study's top quarter (cutoff 0.5)")
    # "steady" is a peer now too (0.5, 0.5, 0.52 at epoch 3: the top quarter from 0.51).
    dipped = ForecastMonitor(run_id="dipped", **kw)
    feed(dipped, [0.54, 0.5, 0.49])
    assert dipped.stopped["epoch"] == 3 and dipped.stopped["reason"] == (
        "flat: best 0.54 within flat_delta 0.05 of its first value 0.54; rung 3: 0.49 "
        "below the study's top quarter at this epoch (cutoff 0.51)")


def test_observe_study_curves_hands_in_the_evidence():
    curves = [[0.3, None, 0.5], [0.1, 0.2, float("nan")], [0.9]]
    for last, stops in ((0.45, False), (0.40, True)):
        mon = ForecastMonitor(target_epoch=4, min_delta=None, keep_top=0.25,
                              model=constant(0.5))
        mon.incumbent = 0.9
        assert mon.observe_study_curves(curves) == 3
        # At epoch 3 the curves' best so far are 0.5 and 0.2 (the third ended at epoch
        # 1): the top quarter starts at 0.425.
        d = feed(mon, [0.1, 0.2, last])[-1]
        assert d.stop is stops, d.reason
