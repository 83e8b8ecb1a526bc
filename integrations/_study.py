"""What a search's finished trials tell its running ones: framework-free bookkeeping.

The search adapters (Optuna, Ray Tune) see trials end; :class:`FinishedTrials` keeps,
per study, what each finished trial reached (for the incumbent,
``ForecastMonitor.observe_study``) and, for the completed ones, their reported curve
as a :class:`~earlystop_predict.records.record.RunRecord` (for the study model,
``ForecastMonitor.observe_study_runs``), and every finished trial's curve for
``keep_top`` without a ledger (``ForecastMonitor.observe_study_curves``). A finished
trial does not change: each is read once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from earlystop_predict.policy.monitor import ForecastMonitor, best_of
from earlystop_predict.records.record import RunRecord


class FinishedTrials:
    """Per study: the value each finished trial reached, and the completed trials' curves.

    Args:
        metric: the reported value's name in the records.
        step_offset: epoch = reported step + this.
    """

    def __init__(self, metric: str, step_offset: int = 1) -> None:
        self.metric, self.step_offset = metric, step_offset
        self._reached: dict[tuple[str, object], float | None] = {}
        self._runs: dict[str, list[RunRecord]] = {}
        self._curves: dict[str, list[list[float | None]]] = {}
        self._fed: dict[str, int] = {}  # run id -> finished curves it was handed

    def __contains__(self, key: tuple[str, object]) -> bool:
        return key in self._reached

    def add(self, study: str, trial: object, *, completed: bool, value: float | None,
            reported: Mapping[int, float], mode: str) -> None:
        """One finished trial: a completed one reached ``value``, a stopped or pruned one
        the best value it ``reported`` (censored evidence, as ``replay`` counts it)."""
        if (study, trial) in self._reached:
            return
        self._reached[(study, trial)] = value if completed else best_of(reported.values(), mode)
        epochs = {int(s) + self.step_offset: v for s, v in reported.items()}
        self._curves.setdefault(study, []).append(
            [epochs.get(e) for e in range(1, max(epochs, default=0) + 1)])
        if completed and reported:
            self._runs.setdefault(study, []).append(RunRecord(
                f"{study}-trial-{trial}", self.metric, mode,
                epochs=[{"epoch": int(s) + self.step_offset, self.metric: v}
                        for s, v in sorted(reported.items())]))

    def values(self, study: str) -> list[float | None]:
        """What each finished trial of ``study`` reached."""
        return [v for (name, _), v in self._reached.items() if name == study]

    def runs(self, study: str) -> Iterable[RunRecord]:
        """The completed trials of ``study`` as records, in the order they finished."""
        return self._runs.get(study, [])

    def feed_curves(self, mon: ForecastMonitor, study: str) -> None:
        """``keep_top`` without a ledger: hand ``mon`` the curves of the study's finished
        trials (each up to where it stopped): those that finished since it was last
        handed them."""
        if not mon.policy.uses_peers or mon.ledger is not None:
            return
        curves = self._curves.get(study, [])
        fed = self._fed.get(mon.record.run_id, 0)
        if fed < len(curves):
            mon.add_study_curves(curves[fed:])
            self._fed[mon.record.run_id] = len(curves)
