"""Progress saved in a framework's checkpoints, for callbacks the framework rebuilds.

The Hugging Face Trainer saves an ``ExportableState`` callback's ``state()`` in every
checkpoint and, with ``restore_callback_states_from_checkpoint=True``, rebuilds the
callback as ``type(cb)(**state["args"])`` and swaps it in for the user's. The user's
callback holds what JSON cannot (a forecaster object, a Ledger), so the rebuild must
hand back the live instance: :class:`CheckpointProgress` does, and keeps the saving
and reading of the progress in one place. Framework-free: the adapter supplies its
init arguments, its progress and how to tell its own run.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Mapping
from typing import Any

from earlystop_predict.errors import EarlystopPredictError

#: Version of the progress saved in checkpoints.
PROGRESS_VERSION = 1
#: Live instances: a checkpoint restore hands back the live one.
_LIVE: list[weakref.ReferenceType[Any]] = []


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class CheckpointProgress:
    """Mixin: ``state()`` for the checkpoint, the live instance back on a rebuild.

    The adapter implements :meth:`_init_args` (its arguments), :meth:`_progress_now`
    (its progress, None before training) and :meth:`_same_run` (whether a rebuild's
    arguments name this instance's run), and calls :meth:`_register` in ``__init__``.
    """

    def __new__(cls, *args: Any, _restore: bool = False, **kwargs: Any) -> Any:
        alive = [cb for cb in (ref() for ref in _LIVE) if type(cb) is cls]
        if _restore and alive:
            same = [cb for cb in alive if cb._same_run(kwargs)]
            return (same or alive)[-1]
        return super().__new__(cls)

    def _register(self) -> None:
        _LIVE[:] = [ref for ref in _LIVE if ref() is not None] + [weakref.ref(self)]

    def _init_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def _progress_now(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _same_run(self, kwargs: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """JSON checkpoint state: the JSON-able init arguments and the progress.

        A rebuild from it (``type(cb)(**state["args"])``) returns the live callback of
        the same class and run, which keeps its own arguments, forecaster and ledger and
        takes the progress (``attributes``); with none alive it builds one from the
        JSON-able arguments (a forecaster object or a Ledger is not among them).
        """
        args = {k: os.fspath(v) if isinstance(v, os.PathLike) else v
                for k, v in self._init_args().items()
                if k not in ("ledger", "model") or isinstance(v, (str, os.PathLike))}
        args = {k: v for k, v in args.items() if _jsonable(v)}
        progress = self._progress_now()
        if progress is not None:
            progress = {"version": PROGRESS_VERSION, **progress}
        return {"args": {**args, "_restore": True}, "attributes": {"restored_state": progress}}

    def resumed_progress(self, stateful_callbacks: Mapping[str, Any] | None, global_step: int,
                         metric: str) -> dict[str, Any] | None:
        """The progress to resume from at the start of training, None for a fresh run:
        what a checkpoint restore handed in (``restored_state``, taken once), else, when
        training resumes past step 0, what the checkpoint's ``stateful_callbacks`` hold
        for this class on ``metric``."""
        progress, self.restored_state = getattr(self, "restored_state", None), None
        if progress is None and global_step > 0:
            return self.saved_progress(stateful_callbacks, type(self).__name__, metric)
        return self.checked(progress, metric)

    @staticmethod
    def saved_progress(stateful_callbacks: Mapping[str, Any] | None, name: str,
                       metric: str) -> dict[str, Any] | None:
        """The progress a checkpoint's ``TrainerState.stateful_callbacks`` holds for the
        callback class ``name`` on ``metric`` (None: none, or another metric's)."""
        saved = (stateful_callbacks or {}).get(name)
        progress = None
        for entry in saved if isinstance(saved, list) else [saved]:
            progress = progress or ((entry or {}).get("attributes") or {}).get("restored_state")
        return CheckpointProgress.checked(progress, metric)

    @staticmethod
    def checked(progress: Mapping[str, Any] | None, metric: str) -> dict[str, Any] | None:
        """``progress`` if it is this version's and of ``metric``, else None.

        Raises:
            EarlystopPredictError: progress of another version.
        """
        if not progress or progress.get("monitor", {}).get("record", {}).get("metric") != metric:
            return None  # none, or saved by a callback on another metric
        if progress.get("version") != PROGRESS_VERSION:
            raise EarlystopPredictError(f"checkpoint progress version "
                                        f"{progress.get('version')!r}, expected {PROGRESS_VERSION}")
        return dict(progress)
