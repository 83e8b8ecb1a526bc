"""StopPolicy: a pure decision from a forecast, with reasons; Decision log items."""

from __future__ import annotations

import math

import pytest

from earlystop_predict.errors import ConfigError, EarlystopPredictError
from earlystop_predict.forecast.base import Forecast
from earlystop_predict.policy.stop import (
    DEFAULT_CLIMB_CREDIT,
    DEFAULT_FLAT_DELTA,
    DEFAULT_GAIN_PATIENCE,
    DEFAULT_MIN_DELTA,
    LOG_KEYS,
    STUDY_MIN_DELTA,
    Decision,
    StopPolicy,
)


def fc(q10: float, q50: float, q90: float, mean: float | None = None) -> Forecast:
    """A forecast with the given quantiles (mean: the median unless given)."""
    return Forecast(mean=q50 if mean is None else mean,
                    quantiles={"0.1": q10, "0.5": q50, "0.9": q90}, model="scripted",
                    observed_epochs=5, target_epoch=50)


POOR = fc(0.55, 0.60, 0.66)     # q0.9 0.66: unlikely to reach 0.9
GOOD = fc(0.88, 0.92, 0.95)     # q0.9 0.95: may well reach 0.9


def policy(**kwargs) -> StopPolicy:
    """A StopPolicy comparing the forecast's q0.9 (these tests' numbers assume it)."""
    kwargs.setdefault("confidence", 0.9)
    return StopPolicy(**kwargs)


def test_default_confidence_compares_q095_extrapolated_past_q09() -> None:
    pol = StopPolicy(threshold=0.9)
    assert pol.confidence == 0.95 and pol.quantile == 0.95
    d = pol.decide(POOR, epoch=5)
    # q0.95 lies beyond the stored q0.9, on a normal tail from the median.
    assert d.stop and d.reason.startswith("forecast q0.95 0.677 < threshold 0.9")


# ----------------------------------------------------------------------------- threshold
def test_threshold_stops_a_poor_forecast():
    d = policy(threshold=0.9, min_epochs=3).decide(POOR, epoch=5)
    assert d.stop and d.would_stop and d.poor
    assert d.epoch == 5 and d.forecast is POOR
    assert d.reason == "forecast q0.9 0.66 < threshold 0.9"


def test_threshold_keeps_a_promising_run():
    d = policy(threshold=0.9).decide(GOOD, epoch=5)
    assert not d.stop and not d.poor and not d.would_stop
    assert "q0.9 0.95 >= threshold 0.9" in d.reason


def test_confidence_picks_the_quantile():
    # q0.9 = 0.95 clears 0.9, but q0.6 (interpolated, 0.9233) does too, and q0.75 too:
    # a bar of 0.94 separates them.
    f = fc(0.88, 0.92, 0.96)
    assert policy(threshold=0.94, confidence=0.9).decide(f, epoch=5).stop is False
    assert policy(threshold=0.94, confidence=0.6).decide(f, epoch=5).stop is True
    assert policy(confidence=0.75).quantile == 0.75


def test_no_bar_means_no_stop():
    d = policy().decide(POOR, epoch=10)
    assert not d.stop and d.reason == "no bar to compare with"


def test_no_forecast_means_no_stop():
    d = policy(threshold=0.9).decide(None, epoch=10)
    assert d == Decision(False, "no forecast", None, 10)


# ----------------------------------------------------------------------------- incumbent
def test_incumbent_stops_a_run_unlikely_to_beat_it():
    d = policy().decide(POOR, epoch=5, incumbent=0.8)
    assert d.stop and d.reason == "forecast q0.9 0.66 < incumbent 0.8"


def test_incumbent_beaten_keeps_running():
    d = policy().decide(POOR, epoch=5, incumbent=0.6)
    assert not d.stop and "incumbent" in d.reason


def test_threshold_is_checked_before_incumbent():
    d = policy(threshold=0.7).decide(POOR, epoch=5, incumbent=0.5)
    assert d.stop and "threshold" in d.reason
    d = policy(threshold=0.5).decide(POOR, epoch=5, incumbent=0.7)
    assert d.stop and "incumbent" in d.reason


@pytest.mark.parametrize("incumbent", [None, float("nan"), float("inf")])
def test_unusable_incumbent_is_ignored(incumbent):
    assert not policy().decide(POOR, epoch=5, incumbent=incumbent).stop


def test_use_incumbent_false_ignores_it():
    assert not policy(use_incumbent=False).decide(POOR, epoch=5, incumbent=0.8).stop


# ----------------------------------------------------------------------------- guards
def test_min_epochs_guards_early_epochs():
    pol = policy(threshold=0.9, min_epochs=4)
    d = pol.decide(POOR, epoch=3)
    assert not d.stop and d.poor and not d.would_stop
    assert d.reason.endswith("min_epochs 4 not reached")
    assert pol.decide(POOR, epoch=4).stop


def test_patience_counts_consecutive_poor_forecasts():
    pol = policy(threshold=0.9, min_epochs=1, patience=3)
    d0 = pol.decide(POOR, epoch=5, poor_streak=0)
    d1 = pol.decide(POOR, epoch=6, poor_streak=1)
    d2 = pol.decide(POOR, epoch=7, poor_streak=2)
    assert [d0.stop, d1.stop, d2.stop] == [False, False, True]
    assert d0.reason.endswith("patience 1/3") and d1.reason.endswith("patience 2/3")
    assert d0.poor and d1.poor and d2.poor


def test_decide_is_pure():
    pol = policy(threshold=0.9, patience=2)
    first = pol.decide(POOR, epoch=5, poor_streak=0)
    assert pol.decide(POOR, epoch=5, poor_streak=0) == first


# ----------------------------------------------------------------------------- divergence
def test_divergence_stops_at_once_even_before_min_epochs():
    d = policy(threshold=0.9, min_epochs=10, patience=5).decide(None, epoch=2,
                                                                    diverged=True)
    assert d.stop and d.reason == "diverged" and d.poor


def test_divergence_can_be_ignored():
    d = policy(stop_on_divergence=False).decide(None, epoch=2, diverged=True)
    assert not d.stop and not d.would_stop
    assert d.reason == "diverged (stop_on_divergence=False)"


# ----------------------------------------------------------------------------- dry run
def test_dry_run_never_stops_but_says_it_would():
    pol = policy(threshold=0.9, dry_run=True)
    d = pol.decide(POOR, epoch=5)
    assert not d.stop and d.would_stop and d.poor
    assert d.reason == "dry_run: would stop: forecast q0.9 0.66 < threshold 0.9"
    assert d.log_items()["esp/stop"] == 0.0
    assert d.to_dict()["would_stop"] is True
    dv = pol.decide(None, epoch=2, diverged=True)
    assert not dv.stop and dv.would_stop and dv.reason == "dry_run: would stop: diverged"


def test_dry_run_quiet_when_nothing_would_fire():
    d = policy(threshold=0.9, dry_run=True).decide(GOOD, epoch=5)
    assert not d.would_stop and "would_stop" not in d.to_dict()


# ----------------------------------------------------------------------------- mode=min
def test_min_mode_uses_the_low_quantile():
    pol = policy(threshold=0.5, mode="min")
    assert pol.quantile == pytest.approx(0.1)
    loss = fc(0.6, 0.7, 0.9)       # even the optimistic q0.1 is above 0.5
    d = pol.decide(loss, epoch=5)
    assert d.stop and d.reason == "forecast q0.1 0.6 > threshold 0.5"
    ok = fc(0.4, 0.7, 0.9)         # q0.1 0.4 may beat 0.5
    d = pol.decide(ok, epoch=5)
    assert not d.stop and "q0.1 0.4 <= threshold 0.5" in d.reason


def test_min_mode_incumbent():
    pol = policy(mode="min")
    assert pol.decide(fc(0.6, 0.7, 0.9), epoch=5, incumbent=0.3).stop
    assert not pol.decide(fc(0.2, 0.7, 0.9), epoch=5, incumbent=0.3).stop


# ----------------------------------------------------------------------------- bad args
@pytest.mark.parametrize(("kwargs", "arg"), [
    ({"mode": "maximize"}, "mode"),
    ({"mode": None}, "mode"),
    ({"confidence": 0.5}, "confidence"),
    ({"confidence": 1.0}, "confidence"),
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": float("nan")}, "confidence"),
    ({"confidence": "high"}, "confidence"),
    ({"min_epochs": 0}, "min_epochs"),
    ({"min_epochs": 2.5}, "min_epochs"),
    ({"min_epochs": True}, "min_epochs"),
    ({"patience": 0}, "patience"),
    ({"patience": "3"}, "patience"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": float("inf")}, "threshold"),
    ({"threshold": "0.9"}, "threshold"),
    ({"threshold": True}, "threshold"),
])
def test_bad_args_raise_config_error_naming_arg_and_value(kwargs, arg):
    with pytest.raises(ConfigError) as err:
        StopPolicy(**kwargs)
    assert err.value.arg == arg
    (value,) = kwargs.values()
    assert str(err.value).startswith(f"{arg} must be ")
    assert repr(value) in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, EarlystopPredictError)


def test_range_is_in_message():
    with pytest.raises(ConfigError, match=r"confidence must be in \(0.5, 1.0\), got 0.2"):
        StopPolicy(confidence=0.2)


def test_integral_numbers_accepted():
    pol = policy(threshold=1, confidence=0.95, min_epochs=1, patience=1)
    assert pol.decide(POOR, epoch=1).stop


# ----------------------------------------------------------------------------- Decision
def test_log_items_before_first_forecast_are_nan():
    items = Decision(False, "no forecast", None, 1).log_items()
    assert tuple(items) == LOG_KEYS
    assert all(math.isnan(items[k]) for k in LOG_KEYS[:3])
    assert items["esp/stop"] == 0.0


def test_log_items_after_a_forecast():
    d = policy(threshold=0.9).decide(POOR, epoch=5)
    assert d.log_items() == {"esp/forecast_mean": 0.6, "esp/forecast_q10": 0.55,
                             "esp/forecast_q90": 0.66, "esp/stop": 1.0}


def test_decision_to_dict_is_a_run_record_forecast_entry():
    d = policy(threshold=0.9).decide(POOR, epoch=5)
    assert d.to_dict() == {"at_epoch": 5, "target_epoch": 50, "mean": 0.6,
                           "quantiles": {"0.1": 0.55, "0.5": 0.6, "0.9": 0.66},
                           "model": "scripted", "stop": True,
                           "reason": "forecast q0.9 0.66 < threshold 0.9"}
    assert Decision(False, "no forecast", None, 2).to_dict() == {
        "at_epoch": 2, "stop": False, "reason": "no forecast"}


# ----------------------------------------------------------------------------- gain rule
def test_gain_stops_a_run_that_will_not_beat_its_best_by_min_delta():
    # q0.9 0.66 < best 0.65 + 0.02: the run is unlikely to gain 2 points more.
    d = policy(min_delta=0.02).decide(POOR, epoch=5, best=0.65)
    assert d.stop and d.poor and d.would_stop
    assert d.reason == "gain: q0.9 0.66 < best 0.65 + min_delta 0.02"


def test_gain_keeps_a_run_that_may_still_improve():
    d = policy(min_delta=0.02).decide(POOR, epoch=5, best=0.60)
    assert not d.stop and not d.poor
    assert d.reason == "forecast gain: q0.9 0.66 >= best 0.6 + min_delta 0.02"


def test_gain_is_on_by_default_and_needs_a_best():
    pol = StopPolicy()
    assert pol.min_delta == "auto" and pol.gain_delta() == DEFAULT_MIN_DELTA
    assert pol.decide(POOR, epoch=5, best=0.70).stop  # q0.95 0.677 < 0.70 + min_delta
    d = pol.decide(POOR, epoch=5)  # no best given: the rule has nothing to compare with
    assert not d.stop and d.reason == "no bar to compare with"
    assert not pol.decide(POOR, epoch=5, best=float("nan")).stop


def test_auto_min_delta_is_smaller_where_another_bar_is_set():
    pol = StopPolicy()
    # Alone: 0.677 < 0.66 + 0.02: the run will not gain 2 points more.
    d = pol.decide(POOR, epoch=5, best=0.66)
    assert d.stop and d.reason == f"gain: q0.95 0.677 < best 0.66 + min_delta {DEFAULT_MIN_DELTA:g}"
    # In a study (an incumbent it beats): only a plateau stops it, at STUDY_MIN_DELTA.
    assert pol.gain_delta(incumbent=0.5) == STUDY_MIN_DELTA
    d = pol.decide(POOR, epoch=5, best=0.66, incumbent=0.5)
    assert not d.stop and f"min_delta {STUDY_MIN_DELTA:g}" in d.reason
    assert StopPolicy(threshold=0.5).gain_delta() == STUDY_MIN_DELTA
    assert StopPolicy(use_incumbent=False).gain_delta(incumbent=0.5) == DEFAULT_MIN_DELTA
    assert StopPolicy(min_delta=0.3).gain_delta(incumbent=0.5) == 0.3


def test_gain_switched_off_with_none():
    d = policy(min_delta=None).decide(POOR, epoch=5, best=0.70)
    assert not d.stop and d.reason == "no bar to compare with"


def test_gain_in_min_mode():
    loss = Forecast(mean=0.40, quantiles={"0.1": 0.35, "0.5": 0.40, "0.9": 0.46},
                    model="scripted", observed_epochs=5, target_epoch=50)
    pol = policy(min_delta=0.05, mode="min")  # compares q0.1 0.35 with best - 0.05
    d = pol.decide(loss, epoch=5, best=0.38)
    assert d.stop and d.reason == "gain: q0.1 0.35 > best 0.38 - min_delta 0.05"
    assert not pol.decide(loss, epoch=5, best=0.42).stop  # 0.35 <= 0.37: may still gain


def test_gain_composes_with_threshold_and_incumbent_first_rule_named():
    pol = policy(threshold=0.9, min_delta=0.02)
    assert pol.decide(POOR, epoch=5, best=0.65).reason.startswith("forecast q0.9 0.66 < threshold")
    pol = policy(min_delta=0.02)
    assert pol.decide(POOR, epoch=5, incumbent=0.8, best=0.65).reason == \
        "forecast q0.9 0.66 < incumbent 0.8"
    # The incumbent is beaten, but the gain rule fires: it names itself.
    d = pol.decide(POOR, epoch=5, incumbent=0.5, best=0.65)
    assert d.stop and d.reason.startswith("gain: ")
    # Nothing fires: every comparison is in the reason.
    d = pol.decide(GOOD, epoch=5, incumbent=0.9, best=0.9)
    assert not d.stop
    assert d.reason == ("forecast q0.9 0.95 >= incumbent 0.9; "
                        "gain: q0.9 0.95 >= best 0.9 + min_delta 0.02")


def test_gain_respects_min_epochs_patience_and_dry_run():
    pol = policy(min_delta=0.02, min_epochs=6)
    d = pol.decide(POOR, epoch=5, best=0.65)
    assert not d.stop and d.poor and "min_epochs 6 not reached" in d.reason
    pol = policy(min_delta=0.02, patience=2)
    d = pol.decide(POOR, epoch=5, best=0.65, poor_streak=0)
    assert not d.stop and d.poor and d.reason.endswith("patience 1/2")
    assert pol.decide(POOR, epoch=6, best=0.65, poor_streak=1).stop
    d = policy(min_delta=0.02, dry_run=True).decide(POOR, epoch=5, best=0.65)
    assert not d.stop and d.would_stop and d.reason.startswith("dry_run: would stop: gain: ")


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), "0.01", "Auto", True])
def test_gain_min_delta_is_checked(bad):
    with pytest.raises(ConfigError, match="min_delta"):
        StopPolicy(min_delta=bad)


# ------------------------------------------------------------------ gain_patience
def test_gain_waits_until_the_best_has_stood_gain_patience_epochs():
    pol = policy(min_delta=0.02, gain_patience=3)
    # The forecast sees no gain of 2 points, but the run set its best 2 epochs ago.
    d = pol.decide(POOR, epoch=5, best=0.65, since_best=2)
    assert not d.stop and not d.poor
    assert d.reason == ("forecast gain: q0.9 0.66 < best 0.65 + min_delta 0.02, "
                        "best stood 2 < gain_patience 3")
    d = pol.decide(POOR, epoch=6, best=0.65, since_best=3)
    assert d.stop and d.poor
    assert d.reason == ("gain: q0.9 0.66 < best 0.65 + min_delta 0.02, "
                        "best stood 3 >= gain_patience 3")
    # A forecast that sees a gain keeps the run, however long the best has stood.
    assert not pol.decide(POOR, epoch=30, best=0.60, since_best=25).stop


def test_gain_patience_default_zero_and_unknown():
    assert StopPolicy().gain_patience == DEFAULT_GAIN_PATIENCE == 3
    assert StopPolicy().gain_delta() == DEFAULT_MIN_DELTA == 0.03
    # since_best unknown (None): the forecast alone decides, as with gain_patience 0.
    assert policy(min_delta=0.02, gain_patience=3).decide(POOR, epoch=5, best=0.65).stop
    d = policy(min_delta=0.02, gain_patience=0).decide(POOR, epoch=5, best=0.65, since_best=0)
    assert d.stop and d.reason == "gain: q0.9 0.66 < best 0.65 + min_delta 0.02"


def test_gain_patience_leaves_the_doomed_run_rules_alone():
    # The threshold and incumbent rules stop at once, whatever since_best says.
    pol = policy(threshold=0.9, min_delta=0.02, gain_patience=10)
    d = pol.decide(POOR, epoch=5, best=0.65, since_best=0)
    assert d.stop and d.reason.startswith("forecast q0.9 0.66 < threshold")
    d = policy(gain_patience=10).decide(POOR, epoch=5, incumbent=0.8, best=0.65, since_best=0)
    assert d.stop and d.reason == "forecast q0.9 0.66 < incumbent 0.8"


def test_gain_patience_in_min_mode():
    loss = Forecast(mean=0.40, quantiles={"0.1": 0.35, "0.5": 0.40, "0.9": 0.46},
                    model="scripted", observed_epochs=5, target_epoch=50)
    pol = policy(min_delta=0.05, mode="min", gain_patience=2)
    assert not pol.decide(loss, epoch=5, best=0.38, since_best=1).stop
    assert pol.decide(loss, epoch=6, best=0.38, since_best=2).stop


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_gain_patience_is_checked(bad):
    with pytest.raises(ConfigError, match="gain_patience"):
        StopPolicy(gain_patience=bad)


# ----------------------------------------------------------------------- keep_top
def test_top_cutoff_is_numpy_percentile():
    np = pytest.importorskip("numpy")
    from earlystop_predict.policy.stop import top_cutoff

    peers = [0.5, 0.9, 0.7, float("nan"), 0.8, None, 0.6]
    finite = [0.5, 0.9, 0.7, 0.8, 0.6]
    assert top_cutoff(peers, 0.25) == pytest.approx(np.percentile(finite, 75))
    assert top_cutoff(peers, 0.25, "min") == pytest.approx(np.percentile(finite, 25))
    assert top_cutoff(peers, 1.0) == 0.5 and top_cutoff([0.4], 0.25) == 0.4
    assert top_cutoff([], 0.25) is None and top_cutoff([float("nan")], 0.25) is None


def test_keep_top_overrules_incumbent_and_gain_for_a_run_in_the_study_top():
    pol = policy(keep_top=0.25, min_delta=0.02, gain_patience=0)
    # Doomed by the incumbent, but its best 0.65 is in the study's top quarter (0.6).
    d = pol.decide(POOR, epoch=5, incumbent=0.8, best=0.65, peer_cutoff=0.6)
    assert not d.stop and not d.poor and not d.would_stop
    assert d.reason == ("forecast q0.9 0.66 < incumbent 0.8; kept: best 0.65 in the "
                        "study's top 0.25 at this epoch (cutoff 0.6)")
    # The gain rule too.
    d = pol.decide(POOR, epoch=5, incumbent=0.5, best=0.65, peer_cutoff=0.6)
    assert not d.stop and d.reason.startswith("gain: ") and "kept: " in d.reason
    # Below the cutoff, or with no evidence yet, the rules stop as before.
    assert pol.decide(POOR, epoch=5, incumbent=0.8, best=0.65, peer_cutoff=0.7).stop
    assert pol.decide(POOR, epoch=5, incumbent=0.8, best=0.65).stop
    # The best 15 % by default (it acts only where a study hands in its runs).
    assert StopPolicy().keep_top == 0.15
    assert not policy().decide(POOR, epoch=5, incumbent=0.8, best=0.65, peer_cutoff=0.1).stop
    assert policy(keep_top=None).decide(POOR, epoch=5, incumbent=0.8, best=0.65,
                                        peer_cutoff=0.1).stop  # off: the evidence unread


def test_keep_top_never_overrules_the_threshold():
    pol = policy(threshold=0.9, keep_top=0.25)
    d = pol.decide(POOR, epoch=5, best=0.65, peer_cutoff=0.1)
    assert d.stop and d.reason.startswith("forecast q0.9 0.66 < threshold")


def test_keep_top_in_min_mode():
    loss = Forecast(mean=0.40, quantiles={"0.1": 0.35, "0.5": 0.40, "0.9": 0.46},
                    model="scripted", observed_epochs=5, target_epoch=50)
    pol = policy(mode="min", keep_top=0.25, min_delta=None)  # q0.1 0.35 > incumbent 0.3
    assert not pol.decide(loss, epoch=5, incumbent=0.3, best=0.38, peer_cutoff=0.4).stop
    assert pol.decide(loss, epoch=5, incumbent=0.3, best=0.42, peer_cutoff=0.4).stop


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "0.25", True])
def test_keep_top_is_checked(bad):
    with pytest.raises(ConfigError, match="keep_top"):
        StopPolicy(keep_top=bad)


# ------------------------------------------------------- flat_delta, climb_credit
def test_a_flat_run_in_a_study_is_judged_at_the_rungs_not_by_its_forecast():
    pol = policy(min_delta=None)  # the incumbent rule alone; rungs at 3, 12, 48
    assert pol.flat_delta == DEFAULT_FLAT_DELTA == 0.05
    assert [e for e in range(1, 60) if pol.is_rung(e)] == [3, 12, 48]
    flat = {"first": 0.50, "best": 0.52, "incumbent": 0.9}
    # Off its rungs a flat run is not stopped, however poor its forecast.
    d = pol.decide(POOR, epoch=5, rung_cutoff=0.6, **flat)
    assert not d.stop and not d.poor
    assert d.reason == ("flat: best 0.52 within flat_delta 0.05 of its first value 0.5; "
                        "judged at the rung epochs (min_epochs x 4**k) against the study's runs")
    # At a rung: kept in the study's top quarter, stopped below it.
    d = pol.decide(POOR, epoch=12, rung_cutoff=0.52, **flat)
    assert not d.stop and d.reason.endswith(
        "rung 12: 0.52 in the study's top quarter (cutoff 0.52)")
    d = pol.decide(GOOD, epoch=12, rung_cutoff=0.6, **flat)  # whatever the forecast says
    assert d.stop and d.poor and d.reason.endswith(
        "rung 12: 0.52 below the study's top quarter at this epoch (cutoff 0.6)")
    # ASHA compares the value at the rung, not the best: a run whose best (0.52) came
    # before its value now (0.49) is judged on 0.49.
    d = pol.decide(POOR, epoch=12, rung_cutoff=0.5, value=0.49, **flat)
    assert d.stop and d.reason.endswith(
        "rung 12: 0.49 below the study's top quarter at this epoch (cutoff 0.5)")
    assert not pol.decide(POOR, epoch=12, rung_cutoff=0.5, value=0.51, **flat).stop
    # With no study runs at this epoch (a single run, a study's first), the forecast
    # rules decide as before; a run that left its start (0.56) too.
    assert pol.decide(POOR, epoch=5, **flat).stop
    assert pol.decide(POOR, epoch=5, rung_cutoff=0.6, first=0.5, best=0.56,
                      incumbent=0.9).stop
    # Off: the forecast decides.
    assert policy(min_delta=None, flat_delta=None).decide(POOR, epoch=5, rung_cutoff=0.6,
                                                          **flat).stop
    # use_incumbent=False never stops against the study: no rung rule either.
    alone = policy(min_delta=0.02, gain_patience=0, use_incumbent=False)
    d = alone.decide(fc(0.50, 0.52, 0.53), epoch=12, rung_cutoff=0.6, **flat)
    assert d.stop and d.reason.startswith("gain: ")
    assert not alone.decide(GOOD, epoch=12, rung_cutoff=0.6, **flat).stop
    # The threshold is the user's bar: never overruled.
    d = policy(threshold=0.9).decide(POOR, epoch=5, rung_cutoff=0.6, **flat)
    assert d.stop and d.reason.startswith("forecast q0.9 0.66 < threshold")


def test_the_rung_rule_in_min_mode_and_with_min_epochs():
    loss = Forecast(mean=0.40, quantiles={"0.1": 0.35, "0.5": 0.40, "0.9": 0.46},
                    model="scripted", observed_epochs=5, target_epoch=50)
    pol = policy(mode="min", min_delta=None, min_epochs=2)
    assert [e for e in range(1, 40) if pol.is_rung(e)] == [2, 8, 32]
    flat = {"first": 0.70, "best": 0.68, "incumbent": 0.3}
    assert pol.decide(loss, epoch=8, rung_cutoff=0.6, **flat).stop  # 0.68 > 0.6: worse
    assert not pol.decide(loss, epoch=8, rung_cutoff=0.7, **flat).stop
    assert not pol.decide(loss, epoch=8, rung_cutoff=0.6, value=0.59, **flat).stop
    assert pol.decide(loss, epoch=8, rung_cutoff=0.7, value=0.71, **flat).stop
    assert not pol.decide(loss, epoch=5, rung_cutoff=0.6, **flat).stop


def test_the_incumbent_rule_credits_a_climbing_run():
    pol = policy(min_delta=None)
    assert pol.climb_credit == DEFAULT_CLIMB_CREDIT == 0.05
    # q0.9 0.66 against 0.7: 0.05 x 0.02 an epoch x 45 epochs left = 0.045 of credit.
    d = pol.decide(POOR, epoch=5, incumbent=0.7, climb=0.02)
    assert not d.stop and d.reason == "forecast q0.9 0.66 + climb credit 0.045 >= incumbent 0.7"
    d = pol.decide(POOR, epoch=5, incumbent=0.72, climb=0.02)
    assert d.stop and d.reason == "forecast q0.9 0.66 + climb credit 0.045 < incumbent 0.72"
    # No climb, a falling best, unknown, or the credit off: the forecast alone.
    for kw in ({"climb": 0.0}, {"climb": -0.01}, {"climb": None}, {"climb": float("nan")}):
        assert pol.decide(POOR, epoch=5, incumbent=0.7, **kw).stop
    assert policy(min_delta=None, climb_credit=None).decide(POOR, epoch=5, incumbent=0.7,
                                                            climb=0.02).stop
    assert pol.credit(0.02, 50, 50) == 0.0  # nothing left to climb
    # The threshold rule takes no credit.
    assert policy(threshold=0.7, min_delta=None).decide(POOR, epoch=5, climb=0.02).stop


@pytest.mark.parametrize("name", ["flat_delta", "climb_credit"])
@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.05", True])
def test_flat_delta_and_climb_credit_are_checked(name, bad):
    with pytest.raises(ConfigError, match=name):
        StopPolicy(**{name: bad})
