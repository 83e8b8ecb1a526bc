"""The trials of a search, kept for a search adapter: framework-free.

A search adapter (the Ray Tune scheduler) keeps one
:class:`~earlystop_predict.policy.monitor.ForecastMonitor` per trial. :class:`TrialBook`
holds them, and what each ended trial reached (completed, or stopped: censored
evidence, as ``replay`` counts it), which it hands to each trial's monitor before its
epoch is decided (:meth:`~earlystop_predict.policy.monitor.ForecastMonitor.observe_study`:
the monitor owns the incumbent). Epochs may be *held* and decided together, with one
forecaster call for all of them (:func:`~earlystop_predict.policy.monitor.decide_many`);
the book's state is plain data for the framework's experiment checkpoint.

Example:
    >>> from earlystop_predict.forecast.base import ScriptedForecaster
    >>> model = ScriptedForecaster(lambda rec, m: 0.5)
    >>> book = TrialBook(lambda key, hp: ForecastMonitor(target_epoch=9, run_id=key,
    ...                                                  model=model, min_epochs=1))
    >>> book.update("a", {}, 1, {"val_accuracy": 0.4}).stop
    False
    >>> book.hold("b", {}, 1, {"val_accuracy": 0.3}, token="trial b")
    >>> [(token, d.epoch) for token, d in book.decide_held()]
    [('trial b', 1)]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from earlystop_predict.errors import ConfigError
from earlystop_predict.integrations._config import check_options, check_target_epoch
from earlystop_predict.integrations._hparams import scalar_metrics, to_float
from earlystop_predict.policy.monitor import (
    ForecastMonitor,
    _resolve_model,
    best_of,
    decide_many,
    epoch_curve,
)
from earlystop_predict.policy.stop import Decision
from earlystop_predict.records.features import canonical_metric
from earlystop_predict.records.record import RunRecord

BOOK_VERSION = 1


class SearchSettings:
    """A search adapter's study-wide arguments (``SEARCH_OPTIONS``), checked once, at
    construction, and the monitors built from them.

    Args:
        adapter: the adapter class (its ``__init__`` names the shared arguments it takes).
        target_epoch: the epoch the trials train to, >= 2.
        options: the shared arguments given.

    Raises:
        ConfigError: ``target_epoch`` < 2 or a bad shared argument.
        TypeError: an argument the adapter does not take.
    """

    def __init__(self, adapter: type, target_epoch: int, options: Mapping[str, Any]) -> None:
        self.target_epoch = check_target_epoch(target_epoch)
        options = check_options(adapter, options)
        self.meta = dict(options.pop("meta", None) or {})
        self.model = _resolve_model(options.pop("model", "auto"))
        self.ledger = options.pop("ledger", None)
        self.options = options
        ForecastMonitor(target_epoch=target_epoch, model=self.model, **options)  # checks
        self.use_incumbent = options.get("use_incumbent", True)

    def monitor(self, metric: str, mode: str | None, *, study: str, run_id: str,
                hparams: Mapping[str, Any]) -> ForecastMonitor:
        """A trial's monitor (not begun): the study's name is its task too."""
        return ForecastMonitor(metric, mode, target_epoch=self.target_epoch, study=study,
                               model=self.model, ledger=self.ledger, run_id=run_id,
                               hparams=hparams, task=study,
                               meta={**self.meta, "max_epochs": self.target_epoch},
                               **self.options)


def epoch_metrics(result: Mapping[str, Any], metric: str, time_attr: str,
                  keys: tuple[str, ...]) -> tuple[int, dict[str, Any]] | None:
    """``(epoch, metrics)`` of a search's result: the 1-based epoch read from
    ``time_attr``, ``metric`` (NaN where not a number) and the curve columns ``keys``
    it holds; None when it is not an epoch result (no ``metric`` or no epoch)."""
    epoch = to_float(result.get(time_attr))
    if metric not in result or epoch is None:
        return None
    metrics = {k: v for k, v in scalar_metrics(result).items() if canonical_metric(k) in keys}
    value = to_float(result.get(metric))
    metrics[metric] = value if value is not None else float("nan")
    return int(epoch), metrics


class TrialBook:
    """One search's trials: their monitors, what the ended ones reached, held epochs.

    Args:
        make: ``make(key, hparams)`` builds a trial's monitor (not begun); called once
            per trial, and again for each trial a saved state restores.
    """

    def __init__(self, make: Callable[[str, Mapping[str, Any]], ForecastMonitor]) -> None:
        self.make = make
        self.monitors: dict[str, ForecastMonitor] = {}
        self.finals: dict[str, float] = {}  # what each ended trial reached
        self.completed: list[str] = []  # trials that ran to their end, in order
        self.held: dict[str, list[Any]] = {}  # key -> [token, result or None]
        self.ended_curves: list[list[Any]] = []  # keep_top's evidence: each ended trial's
        # metric by epoch, in the order they ended (read once, at its end)
        self._fed: dict[str, int] = {}  # key -> ended trials whose curves it was handed
        self._since = 0.0  # when the first of the held epochs was held

    def monitor(self, key: str, hparams: Mapping[str, Any]) -> ForecastMonitor:
        """The trial's monitor, made and begun at its first epoch; without a ledger the
        completed trials' curves serve its study model (``observe_study_runs``)."""
        mon = self.monitors.get(key)
        if mon is None:
            mon = self.monitors[key] = self.make(key, hparams)
            mon.begin()
            if mon.ledger is None and self.completed:
                mon.observe_study_runs([self.monitors[k].record for k in self.completed])
        return mon

    def update(self, key: str, hparams: Mapping[str, Any], epoch: int,
               metrics: Mapping[str, Any]) -> Decision:
        """Record and decide the trial's epoch now (one forecaster call for it)."""
        mon = self.monitor(key, hparams)
        self._observe(key, mon)
        return mon.update(epoch, metrics)

    def hold(self, key: str, hparams: Mapping[str, Any], epoch: int,
             metrics: Mapping[str, Any], token: Any) -> None:
        """Record the trial's epoch, against the incumbent in force now, and hold its
        decision for :meth:`decide_held`; ``token`` comes back with it. A trial holds
        one epoch at a time (decide the held one first)."""
        mon = self.monitor(key, hparams)
        self._observe(key, mon)
        mon.add_epoch(epoch, metrics)
        if not self.held:
            self._since = time.monotonic()
        self.held[key] = [token, None]

    def _observe(self, key: str, mon: ForecastMonitor) -> None:
        """What the ended trials tell the trial's monitor: the incumbent, and for
        ``keep_top`` without a ledger their curves (when more have ended since)."""
        mon.observe_study(self.finals.values())
        fed = self._fed.get(key, 0)
        if mon.policy.uses_peers and mon.ledger is None and \
                fed < len(self.ended_curves):
            mon.add_study_curves(self.ended_curves[fed:])
            self._fed[key] = len(self.ended_curves)

    def due(self, wait_s: float, running: int | None = None) -> bool:
        """Whether the held epochs are to be decided now: some are held, and they have
        waited ``wait_s`` seconds, or (``running`` given) that many trials are held."""
        if not self.held:
            return False
        return (running is not None and len(self.held) >= running) or \
            time.monotonic() - self._since >= wait_s

    def log_into(self, key: str, epoch: float | None, result: dict[str, Any]) -> None:
        """Write the ``esp/*`` values of the trial's decision at ``epoch`` into the
        framework's ``result``: now, or when its held epoch is decided."""
        if key in self.held:
            self.held[key][1] = result
            return
        mon = self.monitors.get(key)
        decision = None if mon is None else mon.last_decision
        if decision is not None and epoch == decision.epoch:
            result.update(mon.log_items())

    def decide_held(self, keys: list[str] | None = None) -> list[tuple[Any, Decision]]:
        """Decide the held epochs (all, or those of ``keys``): one forecaster call
        for all of them. Returns ``(token, decision)`` in the order they were held."""
        keys = [k for k in self.held if keys is None or k in keys]
        entries = [self.held.pop(k) for k in keys]
        decisions = decide_many([self.monitors[k] for k in keys])
        for key, (_, result) in zip(keys, entries, strict=True):
            if result is not None:
                result.update(self.monitors[key].log_items())
        return [(token, d) for (token, _), d in zip(entries, decisions, strict=True)]

    def end(self, key: str, status: str | None, *, completed: bool = False) -> None:
        """Close the trial's run (``status`` None: stopped or failed, as its monitor
        says). A trial that completed, or was stopped without diverging, sets the bar
        with the best value it reached."""
        mon = self.monitors.get(key)
        if mon is None:
            return
        if key in self.held:  # ended before its held epoch was decided
            self.decide_held([key])
        if completed or (mon.stopped and not mon.diverged):
            best = best_of([v for v in mon.record.series(mon.metric).tolist() if v == v],
                           mon.mode)
            if best is not None:
                if key not in self.finals:
                    self.ended_curves.append(epoch_curve(mon.record, mon.metric))
                self.finals[key] = best
        if completed:
            self.completed.append(key)
            mon.end()
        else:
            mon.end(status or ("stopped" if mon.stopped else "failed"))

    def summary(self, target_epoch: int, mode: str) -> str:
        """One line: how many trials were stopped, the target, the incumbent."""
        stopped = sum(1 for m in self.monitors.values() if m.stopped)
        return (f"{stopped} of {len(self.monitors)} trials stopped by forecast; target "
                f"epoch {target_epoch}, best value reached {self.incumbent(mode)}.")

    def incumbent(self, mode: str) -> float | None:
        """The best value the ended trials reached (``mode`` ``"max"`` or ``"min"``)."""
        return best_of(self.finals.values(), mode)

    @property
    def records(self) -> dict[str, RunRecord]:
        """Each trial's record (epochs, forecasts, decisions), by key."""
        return {key: mon.record for key, mon in self.monitors.items()}

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Versioned plain data: each trial's monitor state and what the ended ones
        reached (a held epoch is saved recorded, undecided: its trial replays it)."""
        trials = {key: {"monitor": mon.state_dict(snapshot=False), "hparams": mon.user_hparams,
                        "diverged": mon.diverged}
                  for key, mon in self.monitors.items()}
        return {"version": BOOK_VERSION, "trials": trials, "finals": dict(self.finals),
                "completed": list(self.completed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (its monitors made anew by ``make``).

        Raises:
            ConfigError: a state of another version.
        """
        if state.get("version") != BOOK_VERSION:
            raise ConfigError("trial book state['version']", f"{BOOK_VERSION}",
                              state.get("version"))
        self.monitors, self.held, self._fed = {}, {}, {}
        for key, saved in state["trials"].items():
            mon = self.make(key, saved["hparams"])
            mon.load_state_dict(saved["monitor"])
            mon.diverged = bool(saved["diverged"])
            self.monitors[key] = mon
        self.finals = {k: float(v) for k, v in state["finals"].items()}
        self.ended_curves = [epoch_curve(self.monitors[k].record, self.monitors[k].metric)
                             for k in self.finals if k in self.monitors]
        self.completed = [k for k in state.get("completed", []) if k in self.monitors]


class BookViews:
    """What a search scheduler holding a :class:`TrialBook` (``self.book``, with
    ``self.target_epoch``, ``self._metric`` and ``self._mode``) shows of it, and how it
    settles its metric and mode (Ray Tune's scheduler API, framework-free)."""

    book: TrialBook
    target_epoch: int
    _metric: str | None
    _mode: str | None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``TuneConfig`` where not given here."""
        if (self._metric and metric and metric != self._metric) or \
                (self._mode and mode and mode != self._mode):
            return False
        self._metric, self._mode = self._metric or metric, self._mode or mode
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Refuse to start a search whose metric or mode is still unknown."""
        if not self._metric or self._mode not in ("max", "min"):
            raise ConfigError("metric and mode", "given to ForecastScheduler or to "
                              "tune.TuneConfig(metric=..., mode=...)",
                              (self._metric, self._mode))


    def debug_string(self) -> str:
        """One line for the framework's status output."""
        return "Using ForecastScheduler (earlystop_predict): " + self.book.summary(
            self.target_epoch, "min" if self._mode == "min" else "max")

    @property
    def incumbent(self) -> float | None:
        """The best value the ended trials reached (completed or stopped)."""
        return self.book.incumbent("min" if self._mode == "min" else "max")

    @property
    def records(self) -> dict[str, RunRecord]:
        """Each trial's record (epochs, forecasts, decisions), by trial id."""
        return self.book.records
