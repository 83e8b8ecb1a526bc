"""Stopping policies: pure decisions from a forecast.

A :class:`StopPolicy` owns no state. ``decide()`` takes a forecast and the
run's situation and returns a :class:`Decision`; the caller
(:class:`~earlystop_predict.policy.monitor.ForecastMonitor`) keeps the counters.

Example:
    >>> from earlystop_predict.forecast.base import Forecast
    >>> pol = StopPolicy(threshold=0.9, confidence=0.9, min_epochs=2)
    >>> fc = Forecast(0.6, {"0.1": 0.55, "0.5": 0.6, "0.9": 0.66}, "lstm", "", 5, 50)
    >>> pol.decide(fc, epoch=5).stop
    True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from earlystop_predict.errors import ConfigError
from earlystop_predict.forecast.base import Forecast

LOG_KEYS = ("esp/forecast_mean", "esp/forecast_q10", "esp/forecast_q90", "esp/stop")

#: The gain rule's ``min_delta`` for a run with no other bar (no threshold, no
#: incumbent): metric units, 0.03 = 3 accuracy points. Chosen from
#: ``benchmarks/single_run.py`` (README, "One run against patience").
DEFAULT_MIN_DELTA = 0.03
#: The gain rule's ``min_delta`` where another bar is set (a study's incumbent, a
#: threshold): there the other rules stop the hopeless runs and the gain rule only ends
#: plateaus. Chosen from ``benchmarks/search_rules.py``.
STUDY_MIN_DELTA = 0.001
#: The gain rule's ``gain_patience``: epochs the run's best must have stood (no strict
#: improvement) before the gain rule may stop it. Chosen from ``benchmarks/single_run.py``
#: on half the real families (README, "One run against patience").
DEFAULT_GAIN_PATIENCE = 3
#: ``keep_top`` in a study: a run in the best 15 % of what the study's earlier runs had
#: reached by the same epoch is not stopped by the incumbent or the gain rule. Chosen
#: from ``benchmarks/search_rules.py`` on the first seven real families as the most
#: epochs saved at no more than ASHA's regret there (README, "Stopping: a search").
DEFAULT_KEEP_TOP = 0.15
#: ``flat_delta`` in a study: a run whose best is still within 5 points of its first
#: value has not started to learn, and a forecast of a flat curve cannot see the jump a
#: run that sits at chance may still make; ASHA's rung comparison with the study's runs
#: judges it instead. Chosen from ``benchmarks/search_rules.py`` (README, "Stopping: a
#: search").
DEFAULT_FLAT_DELTA = 0.05
#: ``climb_credit``: the share of a climbing run's recent slope, carried on to the
#: target epoch, that the incumbent rule adds to its forecast (a forecast of a family it
#: never saw under-reads a slow grower). Chosen with ``DEFAULT_FLAT_DELTA``.
DEFAULT_CLIMB_CREDIT = 0.05
#: Epochs over which ``climb`` (the best's gain per epoch) is measured.
CLIMB_WINDOW = 3
#: ASHA's reduction factor for the rung rule (Ray Tune's default): rungs at
#: ``min_epochs x 4**k``, a flat run whose value there is below the top quarter of the
#: study's values there stops.
RUNG_FACTOR = 4


@dataclass(frozen=True)
class Decision:
    """The outcome of one epoch.

    Attributes:
        stop: whether the run should stop now.
        reason: why (or why not), human readable.
        forecast: the forecast it rests on, None before the first forecast.
        epoch: the 1-based epoch the decision was made at.
        poor: the forecast was poor (counts towards ``patience``).
        would_stop: the rule fired, even where ``dry_run`` or a guard kept the run going.
    """

    stop: bool
    reason: str
    forecast: Forecast | None = None
    epoch: int = 0
    poor: bool = False
    would_stop: bool = False

    def log_items(self) -> dict[str, float]:
        """The ``esp/*`` values for framework logs (NaN before the first forecast)."""
        fc = self.forecast
        nan = float("nan")
        return {
            "esp/forecast_mean": fc.mean if fc else nan,
            "esp/forecast_q10": fc.quantile(0.1) if fc else nan,
            "esp/forecast_q90": fc.quantile(0.9) if fc else nan,
            "esp/stop": 1.0 if self.stop else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        """The RUN_RECORD.md ``forecasts`` entry of this decision."""
        out: dict[str, Any] = {"at_epoch": self.epoch}
        if self.forecast is not None:
            fc = self.forecast
            out.update(target_epoch=fc.target_epoch, mean=fc.mean,
                       quantiles=dict(fc.quantiles), model=fc.model)
            if fc.reason:
                out["model_reason"] = fc.reason
        out.update(stop=self.stop, reason=self.reason)
        if self.would_stop and not self.stop:
            out["would_stop"] = True
        return out


def _is_number(value: Any) -> bool:
    """A real number, not a bool (``"0.9"`` or ``True`` are not numbers here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_range(name: str, value: float, lo: float, hi: float, *, open_lo: bool = False,
                 open_hi: bool = False) -> None:
    ok = _is_number(value) and not math.isnan(value) and \
        (value > lo if open_lo else value >= lo) and (value < hi if open_hi else value <= hi)
    if not ok:
        lo_b = "(" if open_lo else "["
        hi_b = ")" if open_hi else "]"
        raise ConfigError(name, f"in {lo_b}{lo}, {hi}{hi_b}", value)


def top_cutoff(peers: Sequence[float], keep_top: float, mode: str = "max") -> float | None:
    """The value a run must reach to be in the ``keep_top`` best fraction of ``peers``.

    ``peers`` are the study's earlier runs' values at this epoch (their best so far for
    ``keep_top``, their value there for the rung rule; non-finite ones are left out);
    the cutoff is their ``1 - keep_top`` quantile (``keep_top`` for ``"min"``), linearly
    interpolated as ``numpy.percentile`` does, as Ray Tune's ASHA takes its rung cutoff.
    None when no peer is finite.

    Args:
        peers: the study's values at this epoch.
        keep_top: the fraction kept, in (0, 1].
        mode: ``"max"`` or ``"min"``. Default ``"max"``.
    """
    vals = sorted(float(v) for v in peers if _is_number(v) and math.isfinite(v))
    if not vals:
        return None
    pos = (1.0 - keep_top if mode == "max" else keep_top) * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


@dataclass(frozen=True)
class StopPolicy:
    """When to stop: the forecast is unlikely to reach a threshold, beat the incumbent,
    or gain more than ``min_delta`` on the run's own best.

    The rules compose: a forecast is poor when any rule finds it poor (threshold
    first, then incumbent, then gain), and the reason names the rule that fired.

    Args:
        threshold: value the metric must be likely to reach at ``target_epoch``
            (fraction for accuracies). None: no threshold rule. Default None.
        confidence: how sure the forecast must be that the run falls short, in
            (0.5, 1). With ``mode="max"`` the run is poor when the forecast's
            ``confidence`` quantile is below the bar. Default 0.95.
        min_epochs: never stop before this 1-based epoch, >= 1. Default 3.
        patience: consecutive poor forecasts needed to stop, >= 1. Default 1.
        mode: ``"max"`` (accuracy-like) or ``"min"`` (loss-like). Default ``"max"``.
        use_incumbent: also stop when unlikely to beat the best value reached in the
            study (Domhan et al. 2015). Default True (needs an incumbent value).
        stop_on_divergence: stop at once, reason "diverged", on a NaN/inf metric or
            loss (even before ``min_epochs``). Default True.
        dry_run: decide and record, never stop. Default False.
        min_delta: the gain rule: stop when the forecast says the run is unlikely (at
            ``confidence``) to improve on its best value so far (``best`` of
            :meth:`decide`) by more than ``min_delta`` by the target epoch, in the
            metric's units, >= 0 (0.01 = 1 accuracy point). It needs no threshold,
            study or ledger: it is what a single run gets by default. ``"auto"``:
            :data:`DEFAULT_MIN_DELTA` (0.03) when no other bar is set this epoch,
            :data:`STUDY_MIN_DELTA` (0.001) when a threshold or an incumbent is. None:
            off. Default ``"auto"``.
        gain_patience: the gain rule also needs the run's best to have stood this many
            epochs (``since_best`` of :meth:`decide`: epochs since its last strict
            improvement, as Keras ``EarlyStopping`` counts them), >= 0; 0: the forecast
            alone decides. A forecast that sees no gain then stops a plateau, not a run
            that is still climbing. Default :data:`DEFAULT_GAIN_PATIENCE` (3).
        keep_top: the study's evidence against a forecast: never stop (on the incumbent
            or the gain rule) a run whose best so far is in the ``keep_top`` best fraction
            of what the study's earlier runs had reached by the same epoch
            (``peer_cutoff`` of :meth:`decide`, from :func:`top_cutoff`), in (0, 1];
            0.25 keeps what ASHA would keep. The threshold rule is not overruled. It
            acts only in a study (with no earlier runs there is nothing to compare
            with). None: off. Default :data:`DEFAULT_KEEP_TOP` (0.15).
        flat_delta: a run whose best so far is within ``flat_delta`` of its first value
            (``first`` of :meth:`decide`; metric units) has not left its start: where the
            study has earlier runs to compare with (``rung_cutoff``), no forecast rule
            stops it; ASHA's rule does (at the rung epochs ``min_epochs x 4**k``,
            :meth:`is_rung`, its value there below the top quarter of the values the
            study's earlier runs had at that epoch stops it, as Ray Tune's
            ``ASHAScheduler`` compares a trial's result at a rung). The threshold rule
            still applies. A single run (no study), or one with ``use_incumbent=False``
            (never stopped against the study), is decided as before. None: off. Default
            :data:`DEFAULT_FLAT_DELTA` (0.05).
        climb_credit: the incumbent rule credits a run that is still climbing: the
            forecast's quantile plus ``climb_credit x climb x (target - epoch)``
            (``climb``: the best's gain per epoch over the last :data:`CLIMB_WINDOW`
            epochs) must fall short of the incumbent, >= 0. None or 0: off. Default
            :data:`DEFAULT_CLIMB_CREDIT` (0.05).
    """

    threshold: float | None = None
    confidence: float = 0.95
    min_epochs: int = 3
    patience: int = 1
    mode: str = "max"
    use_incumbent: bool = True
    stop_on_divergence: bool = True
    dry_run: bool = False
    min_delta: float | str | None = "auto"
    gain_patience: int = DEFAULT_GAIN_PATIENCE
    keep_top: float | None = DEFAULT_KEEP_TOP
    flat_delta: float | None = DEFAULT_FLAT_DELTA
    climb_credit: float | None = DEFAULT_CLIMB_CREDIT

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ConfigError("mode", "'min' or 'max'", self.mode)
        _check_range("confidence", self.confidence, 0.5, 1.0, open_lo=True, open_hi=True)
        if isinstance(self.min_epochs, bool) or not isinstance(self.min_epochs, int) \
                or self.min_epochs < 1:
            raise ConfigError("min_epochs", "an integer >= 1", self.min_epochs)
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) \
                or self.patience < 1:
            raise ConfigError("patience", "an integer >= 1", self.patience)
        if self.threshold is not None and not (_is_number(self.threshold)
                                               and math.isfinite(self.threshold)):
            raise ConfigError("threshold", "a finite number or None", self.threshold)
        if isinstance(self.gain_patience, bool) or not isinstance(self.gain_patience, int) \
                or self.gain_patience < 0:
            raise ConfigError("gain_patience", "an integer >= 0", self.gain_patience)
        if self.keep_top is not None:
            _check_range("keep_top", self.keep_top, 0.0, 1.0, open_lo=True)
        for name in ("flat_delta", "climb_credit"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 <= value < math.inf):
                raise ConfigError(name, "a finite number >= 0 or None", value)
        if self.min_delta is not None and self.min_delta != "auto" and not (
                _is_number(self.min_delta) and 0 <= self.min_delta < math.inf):
            raise ConfigError("min_delta", "a finite number >= 0, 'auto' or None",
                              self.min_delta)

    @property
    def uses_peers(self) -> bool:
        """Whether the decisions use the study's other runs' curves (``keep_top``, the
        rung rule of ``flat_delta``)."""
        return self.keep_top is not None or self.flat_delta is not None

    def is_rung(self, epoch: int) -> bool:
        """Whether ``epoch`` is one of ASHA's rungs, ``min_epochs x 4**k``."""
        e, m = int(epoch), self.min_epochs
        while m < e:
            m *= RUNG_FACTOR
        return m == e

    def is_flat(self, first: float | None, best: float | None) -> bool:
        """Whether the run's best is still within ``flat_delta`` of its first value."""
        if self.flat_delta is None or first is None or best is None or \
                not (_is_number(first) and _is_number(best)) or \
                not (math.isfinite(first) and math.isfinite(best)):
            return False
        return abs(float(best) - float(first)) < self.flat_delta

    def credit(self, climb: float | None, epoch: int, target_epoch: int) -> float:
        """What the incumbent rule adds to the forecast of a climbing run (>= 0)."""
        if not self.climb_credit or climb is None or not _is_number(climb) or \
                not math.isfinite(climb) or climb <= 0:
            return 0.0
        return float(self.climb_credit) * float(climb) * max(int(target_epoch) - int(epoch), 0)

    # The quantile that must clear the bar: optimistic side of the forecast.
    @property
    def quantile(self) -> float:
        """The forecast quantile compared with the bar (``confidence`` for max mode)."""
        return self.confidence if self.mode == "max" else 1.0 - self.confidence

    def _short_of(self, forecast: Forecast, bar: float, credit: float = 0.0
                  ) -> tuple[bool, str]:
        """The forecast's optimistic quantile, moved ``credit`` towards better, against
        ``bar``; the text has a ``{name}`` slot for the bar's name."""
        q = self.quantile
        v = forecast.quantile(q)
        up = self.mode == "max"
        moved = v + credit if up else v - credit
        short = moved < bar if up else moved > bar
        c = f" {'+' if up else '-'} climb credit {credit:.3g}" if credit else ""
        op = ("<" if short else ">=") if up else (">" if short else "<=")
        return short, f"q{q:g} {v:.4g}{c} {op} {{name}} {bar:.4g}"

    def gain_delta(self, incumbent: float | None = None) -> float | None:
        """The ``min_delta`` the gain rule uses this epoch (None: the rule is off)."""
        if self.min_delta != "auto":
            return None if self.min_delta is None else float(self.min_delta)
        other = self.threshold is not None or (
            self.use_incumbent and incumbent is not None and math.isfinite(incumbent))
        return STUDY_MIN_DELTA if other else DEFAULT_MIN_DELTA

    def _gain_short(self, forecast: Forecast, best: float, delta: float,
                    since_best: int | None = None) -> tuple[bool, str]:
        """The gain rule: the forecast's optimistic quantile against ``best +/- min_delta``,
        once the best has stood ``gain_patience`` epochs (``since_best`` None: unknown,
        not required)."""
        q = self.quantile
        v = forecast.quantile(q)
        if self.mode == "max":
            poor = v < best + delta
            op, sign = ("<" if poor else ">="), "+"
        else:
            poor = v > best - delta
            op, sign = (">" if poor else "<="), "-"
        text = f"gain: q{q:g} {v:.4g} {op} best {best:.4g} {sign} min_delta {delta:g}"
        if self.gain_patience and since_best is not None:
            stood = since_best >= self.gain_patience
            poor = poor and stood
            text += f", best stood {since_best} {'>=' if stood else '<'} " \
                    f"gain_patience {self.gain_patience}"
        return poor, text

    def is_poor(self, forecast: Forecast, incumbent: float | None = None,
                best: float | None = None, since_best: int | None = None,
                credit: float = 0.0) -> tuple[bool, str]:
        """Whether this forecast alone is poor, and the comparison made.

        Args:
            forecast: the forecast of the target epoch.
            incumbent: best value the study's finished runs reached, None if none.
            best: the run's best value so far (the gain rule), None if none.
            since_best: epochs since the run's best value (the gain rule's
                ``gain_patience``), >= 0; None: unknown (not required).
            credit: added to the forecast by the incumbent rule (:meth:`credit`).
        """
        parts = []
        if self.threshold is not None:
            poor, text = self._short_of(forecast, float(self.threshold))
            if poor:
                return True, "forecast " + text.format(name="threshold")
            parts.append(text.format(name="threshold"))
        if self.use_incumbent and incumbent is not None and math.isfinite(incumbent):
            poor, text = self._short_of(forecast, float(incumbent), credit)
            if poor:
                return True, "forecast " + text.format(name="incumbent")
            parts.append(text.format(name="incumbent"))
        delta = self.gain_delta(incumbent)
        if delta is not None and best is not None and _is_number(best) and math.isfinite(best):
            poor, text = self._gain_short(forecast, float(best), delta, since_best)
            if poor:
                return True, text
            parts.append(text)
        return False, ("forecast " + "; ".join(parts)) if parts else "no bar to compare with"

    def decide(self, forecast: Forecast | None, *, epoch: int, poor_streak: int = 0,
               incumbent: float | None = None, diverged: bool = False,
               best: float | None = None, since_best: int | None = None,
               peer_cutoff: float | None = None, first: float | None = None,
               climb: float | None = None, rung_cutoff: float | None = None,
               value: float | None = None) -> Decision:
        """Decide for one epoch; pure (the caller keeps ``poor_streak``).

        Args:
            forecast: this epoch's forecast, None when none was made.
            epoch: 1-based epoch just finished.
            poor_streak: consecutive poor forecasts before this one, >= 0.
            incumbent: best value the study's finished runs reached, None if none.
            diverged: the metric or loss is NaN/inf this epoch.
            best: the run's best value of the metric so far (the gain rule; None: the
                gain rule is off this epoch).
            since_best: epochs since the epoch of ``best`` (0: this epoch set it), for
                ``gain_patience``; None: unknown, the forecast alone decides.
            peer_cutoff: with ``keep_top``, the value ``best`` must reach to be in the
                study's top fraction at this epoch (:func:`top_cutoff`); None: no
                evidence yet.
            first: the run's first value of the metric (``flat_delta``), None if none.
            climb: the best's gain per epoch over the last :data:`CLIMB_WINDOW` epochs
                (``climb_credit``), None if unknown.
            rung_cutoff: for a flat run, the top quarter's cutoff of the values the
                study's earlier runs had at this epoch (``top_cutoff(values, 0.25)``, as
                ASHA's rung); None: no earlier run reached it.
            value: the run's value of the metric this epoch, which the rung rule
                compares with ``rung_cutoff`` (None: ``best`` stands for it).
        """
        if diverged:
            fire = self.stop_on_divergence
            return self._finish(fire, "diverged", forecast, epoch, poor=True)
        if forecast is None:
            return Decision(False, "no forecast", None, epoch)
        if self.use_incumbent and rung_cutoff is not None and self.is_flat(first, best) \
                and not (self.threshold is not None
                         and self._short_of(forecast, float(self.threshold))[0]):
            return self._rung(forecast, epoch, float(first), float(best), rung_cutoff,
                              best if value is None else value)
        credit = self.credit(climb, epoch, forecast.target_epoch)
        poor, text = self.is_poor(forecast, incumbent, best, since_best, credit)
        if poor and self._kept_by_study(forecast, best, peer_cutoff):
            return Decision(False, f"{text}; kept: best {best:.4g} in the study's top "
                            f"{self.keep_top:g} at this epoch (cutoff {peer_cutoff:.4g})",
                            forecast, epoch)
        if not poor:
            return Decision(False, text, forecast, epoch)
        streak = poor_streak + 1
        if epoch < self.min_epochs:
            return Decision(False, f"{text}; min_epochs {self.min_epochs} not reached",
                            forecast, epoch, poor=True)
        if streak < self.patience:
            return Decision(False, f"{text}; patience {streak}/{self.patience}", forecast,
                            epoch, poor=True)
        return self._finish(True, text, forecast, epoch, poor=True)

    def _rung(self, forecast: Forecast, epoch: int, first: float, best: float,
              cutoff: float, value: float) -> Decision:
        """A flat run in a study: ASHA's rule at the rung epochs, nothing in between
        (its ``value`` at the rung against the top quarter of the study's values there)."""
        flat = f"flat: best {best:.4g} within flat_delta {self.flat_delta:g} of its first " \
               f"value {first:.4g}"
        if not self.is_rung(epoch) or epoch < self.min_epochs:
            return Decision(False, f"{flat}; judged at the rung epochs (min_epochs x "
                            f"{RUNG_FACTOR}**k) against the study's runs", forecast, epoch)
        below = value < cutoff if self.mode == "max" else value > cutoff
        if not below:
            return Decision(False, f"{flat}; rung {epoch}: {value:.4g} in the study's top "
                            f"quarter (cutoff {cutoff:.4g})", forecast, epoch)
        return self._finish(True, f"{flat}; rung {epoch}: {value:.4g} below the study's top "
                            f"quarter at this epoch (cutoff {cutoff:.4g})", forecast, epoch,
                            poor=True)

    def _kept_by_study(self, forecast: Forecast, best: float | None,
                       cutoff: float | None) -> bool:
        """``keep_top``: the run is in the study's top fraction at this epoch (the
        threshold rule is the user's own bar: never overruled)."""
        if self.keep_top is None or cutoff is None or best is None or \
                not _is_number(best) or not math.isfinite(best):
            return False
        if self.threshold is not None and self._short_of(forecast, float(self.threshold))[0]:
            return False
        return best >= cutoff if self.mode == "max" else best <= cutoff

    def _finish(self, fire: bool, text: str, forecast: Forecast | None, epoch: int,
                *, poor: bool) -> Decision:
        if fire and self.dry_run:
            return Decision(False, f"dry_run: would stop: {text}", forecast, epoch, poor=poor,
                            would_stop=True)
        if not fire:
            return Decision(False, f"{text} (stop_on_divergence=False)", forecast, epoch,
                            poor=poor)
        return Decision(True, text, forecast, epoch, poor=poor, would_stop=True)
