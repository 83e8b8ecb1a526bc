"""What the Hugging Face adapter does beyond translating events, framework-free.

The ``Trainer`` hands its callbacks plain values (the state's numbers, an
evaluation's metrics, ``log_history``); these helpers take them as such:

- the Trainer's names: :func:`hf_key`, :func:`hf_planned`, :func:`hf_eval_row` (an
  evaluation's row, with the latest training loss), :func:`hf_check_best_model`;
- :class:`EvalMatcher`: which evaluation is the monitored one when the Trainer
  evaluates several eval sets at a step (``eval_dataset={"a": ..., "b": ...}``);
- :func:`on_stack`: the object running on the call stack (the ``CallbackHandler``
  calling us, through which our values reach the reporting integrations as one more
  ``on_log`` event; the Trainer frame that called it, which holds the search's trial);
- :func:`search_trial` and :func:`trial_monitor`: a hyperparameter-search trial
  (Optuna's ``Trial``, Ray Tune's config) as a run of its own in the search's study,
  held against what the study's earlier trials reached (in this process; across Ray
  Tune's worker processes only a ledger carries it);
- :func:`begin`, :func:`decide`, :func:`report`, :func:`finish`: the run's start, one
  evaluation's decision on rank 0 for every rank, its ``log_history`` row and
  ``on_log`` event, and the run's end (:func:`pruned_by_search` tells a trial the
  search's pruner ended).

Nothing here imports transformers (the adapter hands in the classes it looks for).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from earlystop_predict.errors import ConfigError, MetricNotFoundError
from earlystop_predict.integrations._distributed import rank_zero_decides, torch_broadcast
from earlystop_predict.integrations._hparams import (
    config_hparams,
    enum_value,
    hf_hparams,
    scalar_metrics,
    to_float,
)
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.policy.stop import Decision
from earlystop_predict.records.features import canonical_metric, canonical_metrics

#: Suffixes of the speed metrics the Trainer adds to every evaluation (not recorded).
_HF_SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second",
                      "_model_preparation_time", "_jit_compilation_time")


def hf_key(monitor: Any) -> str:
    """The Trainer's key of a metric: ``accuracy``/``val_accuracy`` -> ``eval_accuracy``.

    Raises:
        ConfigError: ``monitor`` is not a non-empty string.
    """
    if not isinstance(monitor, str) or not monitor:
        raise ConfigError("monitor", "a non-empty metric name", monitor)
    if monitor.startswith("eval_"):
        return monitor
    return "eval_" + (monitor[4:] if monitor.startswith("val_") else monitor)


def hf_eval_prefix(metrics: Mapping[str, Any]) -> str | None:
    """An evaluation's key prefix (``eval``, ``eval_<dataset>``) from its speed metrics."""
    return next((k[: -len("_runtime")] for k in metrics
                 if k.endswith("_runtime") and not k.startswith("train")), None)


def hf_planned(args: Any, state: Any, steps_mode: bool) -> int | None:
    """The planned epochs, or evaluations (``max_steps // eval_steps``) in steps mode."""
    if steps_mode:
        eval_steps = int(state.eval_steps or 0)
        return int(state.max_steps) // eval_steps if eval_steps > 0 else None
    epochs = state.num_train_epochs or getattr(args, "num_train_epochs", None)
    return math.ceil(float(epochs)) if epochs else None


def hf_eval_row(metrics: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                is_eval: Any) -> dict[str, float]:
    """An evaluation's row: its metrics (speed ones left out) and the latest training
    ``loss`` in ``history`` since the previous evaluation (``is_eval(entry)`` tells
    evaluations; the Trainer logs this one before ``on_evaluate``)."""
    row = {k: v for k, v in scalar_metrics(metrics).items()
           if k not in ("epoch", "step") and not k.endswith(_HF_SPEED_SUFFIXES)}
    evals = 0
    for entry in reversed(history):
        if "esp/decision" in entry:
            break
        if is_eval(entry):
            evals += 1
            if evals > 1:
                break
        elif "loss" in entry:
            loss = to_float(entry["loss"])
            if loss is not None:
                row.setdefault("loss", loss)
            break
    return row



def hf_check_best_model(args: Any, metric_key: str, metric: str, restore: bool,
                        warned: bool) -> bool:
    """Check ``restore_best_weights`` against the Trainer's own best-model keeping; warn
    once when the Trainer keeps the best model by another metric. Returns ``warned``.

    Raises:
        ConfigError: ``restore`` without ``load_best_model_at_end``.
    """
    best = getattr(args, "metric_for_best_model", None)
    keeps = bool(getattr(args, "load_best_model_at_end", False))
    if restore and not keeps:
        raise ConfigError("restore_best_weights", "used with TrainingArguments("
                          "load_best_model_at_end=True)", True)
    if keeps and best and not warned and canonical_metric(hf_key(best)) != metric:
        warnings.warn(f"HFForecastCallback monitors {metric_key!r} but the Trainer keeps the "
                      f"best model by metric_for_best_model={best!r}", UserWarning, stacklevel=4)
        return True
    return warned


class EvalMatcher:
    """Tells the monitored evaluation among the eval sets' evaluations of a step.

    With several eval sets the Trainer evaluates each in turn at one step, each with
    its key prefix (``eval_a_accuracy``, ``eval_b_accuracy``). The evaluation holding
    the monitored metric is recorded; another set's is passed over, and a step none of
    whose evaluations held it fails (:meth:`raise_unmatched`) with the keys seen.

    Args:
        key: the Trainer's key of the monitored metric (``"eval_accuracy"``).
        metric: its canonical name (``"val_accuracy"``).
    """

    def __init__(self, key: str, metric: str) -> None:
        self.key, self.metric = key, metric
        self.reset()

    def reset(self) -> None:
        """Forget the steps seen (at each ``train()``)."""
        self._matched_step: int | None = None
        #: The metrics of this step's other evaluations while none held ours.
        self.unmatched: dict[str, Any] | None = None

    def has_metric(self, metrics: Mapping[str, Any]) -> bool:
        """``metrics`` hold the monitored metric (under its key or an alias)."""
        return self.key in metrics or self.metric in canonical_metrics(metrics)

    def is_eval(self, entry: Mapping[str, Any]) -> bool:
        """``entry`` of ``log_history`` is an evaluation holding the monitored metric."""
        return self.key in entry or (hf_eval_prefix(entry) is not None
                                     and self.metric in canonical_metrics(entry))

    def match(self, metrics: Mapping[str, Any], step: int) -> bool | None:
        """Whether to record this evaluation: True with the metric, False for the
        default eval set without it (the caller raises), None for another set's
        evaluation (kept, to fail later if no evaluation of ``step`` had the metric)."""
        present = self.has_metric(metrics)
        if not present and hf_eval_prefix(metrics) not in (None, "eval"):
            if self._matched_step != step:
                self.unmatched = {**(self.unmatched or {}), **metrics}
            return None
        self._matched_step, self.unmatched = step, None
        return present

    def missing(self, metrics: Mapping[str, Any]) -> MetricNotFoundError:
        """The error for an evaluation without the metric, listing its keys."""
        return MetricNotFoundError(self.key, [k for k in metrics if k != "epoch"])

    def raise_unmatched(self) -> None:
        """Raise if the last step's evaluations all lacked the metric (then forget it).

        Raises:
            MetricNotFoundError: listing the keys those evaluations had.
        """
        if self.unmatched is not None:
            keys, self.unmatched = self.unmatched, None
            raise self.missing(keys)


def report(handler_kind: type, args: Any, state: Any, control: Any, mon: ForecastMonitor,
           index: int, decision: Decision | None) -> None:
    """Append the decision's row to ``state.log_history`` and send its ``esp/*`` values
    to the reporting integrations as one ``on_log`` event, through the calling
    ``CallbackHandler`` (of class ``handler_kind``: the Trainer logged the evaluation
    before ``on_evaluate``, so this is the only way to reach TensorBoard, W&B...)."""
    items = mon.log_items()
    state.log_history.append(log_entry(state.epoch, state.global_step, items, index,
                                       mon.record.run_id, mon.poor_streak, decision))
    handler = on_stack(handler_kind)[0]
    if handler is not None:
        handler.on_log(args, state, control, {**items, "epoch": state.epoch})


def log_entry(epoch: float | None, step: int, items: Mapping[str, float], index: int,
              run_id: str, poor_streak: int, decision: Any) -> dict[str, Any]:
    """The row appended to ``state.log_history`` after a decision: ``epoch``, ``step``,
    the ``esp/*`` values, the evaluation's index, the run id, the poor streak and the
    decision's record entry (``decision.to_dict()``, None before the first)."""
    return {"epoch": epoch, "step": step, **items, "esp/index": index, "esp/run_id": run_id,
            "esp/poor_streak": poor_streak,
            "esp/decision": decision.to_dict() if decision is not None else None}


def index_at_step(history: Sequence[Mapping[str, Any]], step: int | None) -> int | None:
    """The evaluation index (``esp/index``) logged at ``step``, None if none was."""
    return {r.get("step"): r.get("esp/index") for r in history if "esp/index" in r}.get(step)


def pruned_by_search(global_step: int, max_steps: int, should_stop: bool) -> bool:
    """A run ended before its planned steps without any callback asking: the Trainer
    calls ``on_train_end`` that way only when the search's pruner pruned the trial."""
    return 0 < global_step < max_steps and not should_stop


def on_stack(kind: type, depth: int = 12) -> tuple[Any, Mapping[str, Any]]:
    """``(obj, caller)``: the nearest object of class ``kind`` whose method is running on
    the call stack (a frame's ``self``), and the locals of the frame that called that
    method; ``(None, {})`` when there is none within ``depth`` frames."""
    frame = sys._getframe(1)
    try:
        for _ in range(depth):
            if frame is None:
                break
            obj = frame.f_locals.get("self")
            if isinstance(obj, kind):
                while frame is not None and frame.f_locals.get("self") is obj:
                    frame = frame.f_back
                return obj, (frame.f_locals if frame is not None else {})
            frame = frame.f_back
    finally:
        del frame  # no reference cycle through the frames
    return None, {}


class Trial(NamedTuple):
    """A hyperparameter-search trial, as the run records it."""

    study: str | None   #: the search's name (Optuna's study, Ray Tune's experiment)
    id: str             #: the trial's number (Optuna) or id (Ray Tune)
    params: dict[str, Any]  #: its hyperparameters


def _ray_context() -> tuple[str | None, str | None]:
    tune = sys.modules.get("ray.tune")
    try:
        ctx = tune.get_context() if tune is not None else None
        return ctx.get_experiment_name(), ctx.get_trial_id()
    except Exception:  # noqa: BLE001 - not inside a Tune trial: no names
        return None, None


def search_trial(trial: Any, params: Mapping[str, Any] | None,
                 name: str | None = None) -> Trial | None:
    """The search trial a ``train(trial=...)`` runs, None outside a search.

    Args:
        trial: what the Trainer was handed: an Optuna ``Trial`` (its study's name, its
            number), a Ray Tune config dict (the experiment's name and the trial's id from
            Tune's context), or None.
        params: ``state.trial_params``, the trial's hyperparameters.
        name: ``state.trial_name`` (set when the search has an ``hp_name``), the
            trial's id where the backend gives none.
    """
    if trial is None and params is None:
        return None
    number = getattr(trial, "number", None)
    study = getattr(getattr(trial, "study", None), "study_name", None)
    if number is None and isinstance(trial, Mapping):
        study, number = _ray_context()
    ident = name if number is None else str(number)
    if ident is None:
        return None
    source = params if params is not None else getattr(trial, "params", trial)
    return Trial(study, ident, config_hparams(source if isinstance(source, Mapping) else {}))


def trial_monitor(key: str, options: Mapping[str, Any], trial: Trial | None, *,
                  rank_zero: bool, reached: Mapping[str | None, Sequence[float]]
                  ) -> ForecastMonitor:
    """The monitor of a ``train()``: with the ledger on the world process zero only and,
    for a search trial, its own run (``<run_id or search name>-trial-<id>``), the user's
    study or the search's, the trial's parameters under the user's ``hparams``, and
    what the study's earlier trials ``reached`` (by study) as its incumbent."""
    opts = dict(options)
    if trial is not None:
        opts.update(run_id=f"{options.get('run_id') or trial.study or 'hf'}-trial-{trial.id}",
                    study=options.get("study") or trial.study,
                    hparams={**trial.params, **(options.get("hparams") or {})})
    mon = ForecastMonitor(key, **{**opts, "ledger": opts.get("ledger") if rank_zero else None})
    if trial is not None:
        mon.observe_study(reached.get(mon.study, ()))
    return mon


def steps_mode(args: Any) -> bool:
    """The Trainer evaluates every ``eval_steps`` steps (not at each epoch's end)."""
    return str(enum_value(getattr(args, "eval_strategy", ""))) == "steps"


def eval_index(args: Any, epoch: float | None, evals_done: int) -> int:
    """The 1-based index of this evaluation as the run's row: its epoch
    (``round(state.epoch)``), or in steps mode the evaluations done so far plus one."""
    return evals_done + 1 if steps_mode(args) else int(round(epoch or 0))


def begin(mon: ForecastMonitor, args: Any, state: Any, progress: Mapping[str, Any] | None, *,
          model: Any, loader: Any, optimizer: Any) -> int:
    """Start (or, with ``progress``, resume) ``mon``'s run with the hyperparameters read
    from ``args``, the model and the data, and the planned epochs (evaluations in
    steps mode) as its target. Returns the evaluations already done."""
    planned = hf_planned(args, state, steps_mode(args))
    hp, meta = hf_hparams(args, int(state.max_steps or 0), model, loader, optimizer,
                          mon.monitor)
    if progress is not None:
        mon.load_state_dict(progress["monitor"])
    mon.begin(hp, {**meta, **({"max_epochs": planned} if planned else {})},
              target_epoch=planned, resume=progress is not None)
    return int(progress.get("evals", 0)) if progress else 0


def decide(mon: ForecastMonitor, index: int, row: Callable[[], Mapping[str, Any]],
           missing: MetricNotFoundError | None, world_size: int) -> tuple[bool, Decision | None]:
    """One evaluation's ``(stop, decision)``: every rank records it, rank 0's answer
    is the one all take (it alone sees the incumbent); ``missing`` is raised instead
    (on every rank) when the evaluation lacks the metric."""
    def work() -> tuple[bool, str]:
        if missing is not None:
            raise missing
        decision = mon.update(index, row())
        return decision.stop, decision.reason

    is_zero, broadcast = torch_broadcast(world_size)
    stop, reason = rank_zero_decides(work, is_zero=is_zero, broadcast=broadcast,
                                     every_rank=True)
    decision = mon.last_decision
    if decision is not None and stop != decision.stop:
        decision = mon.override(stop, f"rank 0: {reason}")
    return stop, decision


def finish(mon: ForecastMonitor, *, restored: int | None, pruned: bool, failed: bool,
           ledger_option: Any, reached: dict[str | None, list[float]] | None) -> None:
    """Close the run: note the best weights the Trainer loaded back (``restored``: its
    evaluation index), a stop by the search's pruner, and the status; a ledger given as
    a path is closed (the callback opened it), a Ledger object is left to its owner.
    A search trial's best value is added to ``reached`` (by study) unless it diverged."""
    if reached is not None and mon.best is not None and not mon.diverged:
        reached.setdefault(mon.study, []).append(mon.best)
    if restored is not None:
        mon.note_restored(restored)
    if pruned and mon.last_decision is not None and not mon.stopped:
        mon.override(True, "pruned by the search")
    try:
        mon.end("failed" if failed else None)
    finally:
        if isinstance(ledger_option, (str, os.PathLike)) and mon.ledger is not None:
            mon.ledger.close()
