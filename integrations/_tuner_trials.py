"""What a Keras Tuner search's trials mean to a forecast study, read without importing
Keras Tuner (its trial statuses are plain strings, its trials plain objects).

A stopped trial's ``score`` is the best objective value it reached: a value its best
checkpoint holds, and a bound on what it would have reached had it trained on (the best
value so far only improves with epochs). So the ranking counts stopped trials with the
completed ones by that score, as the incumbent does; a trial with no score follows.

Example:
    >>> from types import SimpleNamespace as T
    >>> trials = [T(trial_id="0", status="COMPLETED", score=0.7),
    ...           T(trial_id="1", status="STOPPED", score=0.8),
    ...           T(trial_id="2", status="FAILED", score=None)]
    >>> [t.trial_id for t in ranked(trials, "max")]
    ['1', '0', '2']
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from earlystop_predict.policy.monitor import best_of
from earlystop_predict.records.features import canonical_metric
from earlystop_predict.records.record import finite_or_none

COMPLETED, STOPPED, FAILED = "COMPLETED", "STOPPED", "FAILED"
ENDED = (COMPLETED, STOPPED)


def reached(trial: Any, metric: str, mode: str) -> float | None:
    """The best value of ``metric`` (a canonical name) that a trial's metrics hold, None
    if they hold none (Keras Tuner keeps the metrics of the objective's best epoch)."""
    values = [obs.mean() for name, history in trial.metrics.metrics.items()
              if canonical_metric(name) == metric for obs in history.get_history()]
    return best_of((finite_or_none(v) for v in values), mode)


def ranked(trials: Iterable[Any], direction: str) -> list[Any]:
    """Completed and stopped trials with a score, best first (``direction`` ``"max"``
    or ``"min"``; ties keep the trials' order), then every other trial."""
    trials = list(trials)
    scored = [t for t in trials if t.status in ENDED and finite_or_none(t.score) is not None]
    best = sorted(scored, key=lambda t: t.score, reverse=direction == "max")
    ids = {id(t) for t in best}
    return best + [t for t in trials if id(t) not in ids]


@contextmanager
def stopped_as_completed(trials: Iterable[Any]) -> Iterator[None]:
    """Within the block, each stopped trial with a score shows ``COMPLETED`` (one without
    shows ``FAILED``); back to ``STOPPED`` after it, whatever happens."""
    stopped = [t for t in trials if t.status == STOPPED]
    for t in stopped:
        t.status = FAILED if finite_or_none(t.score) is None else COMPLETED
    try:
        yield
    finally:
        for t in stopped:
            t.status = STOPPED


def stop_message(stopped: dict[str, Any]) -> str:
    """A stopped trial's ``message``: the epoch and the monitor's reason."""
    return f"earlystop_predict stopped it at epoch {stopped['epoch']}: {stopped['reason']}"
