"""The arguments every adapter shares, declared once.

They are :class:`~earlystop_predict.policy.monitor.ForecastMonitor`'s keyword
arguments, typed, defaulted and documented there. An adapter names only its own
arguments and takes the shared ones as ``**options``; :func:`monitor_arguments`
then shows them in the adapter's signature (``help()``, ``inspect.signature``,
IPython and Jupyter) and appends their documentation to the adapter's docstring,
so that each is written once and read everywhere.

Example:
    >>> @monitor_arguments(only=("threshold", "patience"))
    ... class Pruner:
    ...     '''Prunes.'''
    ...     def __init__(self, target_epoch: int, **options): ...
    >>> import inspect
    >>> str(inspect.signature(Pruner))
    '(target_epoch: int, *, threshold: float | None = None, patience: int = 1)'
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from earlystop_predict.errors import ConfigError
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.policy.stop import Decision
from earlystop_predict.records.record import RunRecord

_C = TypeVar("_C", bound=type)

#: The shared arguments that mean something for a whole search (Optuna, Ray Tune).
SEARCH_OPTIONS = ("threshold", "confidence", "min_epochs", "patience", "min_delta",
                  "gain_patience", "keep_top", "flat_delta", "climb_credit", "use_incumbent",
                  "use_study", "study_model_runs", "model", "ledger", "meta", "dry_run")


def _monitor_parameters() -> dict[str, inspect.Parameter]:
    from earlystop_predict.ledger import Ledger  # the one name monitor.py imports for typing only

    names = {**vars(sys.modules[ForecastMonitor.__module__]), "Ledger": Ledger}
    sig = inspect.signature(ForecastMonitor.__init__, globals=names, eval_str=True)
    return {n: p for n, p in sig.parameters.items() if n != "self"}


def _monitor_docs() -> dict[str, str]:
    """``{argument: its lines}`` of ForecastMonitor's ``Args:`` section."""
    doc = inspect.getdoc(ForecastMonitor) or ""
    section = doc.split("Args:", 1)[-1].split("\n\n", 1)[0]
    docs: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        head = re.match(r"    (\w+): ", line)
        if head:
            name = head.group(1)
            docs[name] = line.strip()
        elif name and line.strip():
            docs[name] += "\n            " + line.strip()
    return docs


def monitor_arguments(*, only: Iterable[str] | None = None) -> Callable[[_C], _C]:
    """Class decorator: the class's ``__init__`` takes the shared arguments as ``**options``.

    Args:
        only: the shared arguments the class takes (None: all of them). Its own
            parameters of the same name win (their default and their place).

    Returns:
        The decorator; it sets ``__init__.__signature__`` and extends ``__doc__``.
    """
    keep = None if only is None else tuple(only)

    def decorate(cls: _C) -> _C:
        init = cls.__init__
        try:
            own = inspect.signature(init, eval_str=True)
        except NameError:  # a name imported for typing only: keep the annotation text
            own = inspect.signature(init)
        mine = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in mine}
        monitor = _monitor_parameters()
        shared = [p.replace(kind=p.KEYWORD_ONLY) for n, p in monitor.items()
                  if n not in names and (keep is None or n in keep)]
        undocumented = [p.name for p in mine
                        if p.name in monitor and f"    {p.name}: " not in (cls.__doc__ or "")]
        init.__signature__ = own.replace(parameters=mine + shared)  # type: ignore[attr-defined]
        init.__shared_options__ = tuple(p.name for p in shared)  # type: ignore[attr-defined]
        docs = _monitor_docs()
        named = undocumented + [p.name for p in shared]
        lines = "\n".join(f"        {docs[n]}" for n in named if n in docs)
        cls.__doc__ = (cls.__doc__ or "").rstrip() + (
            "\n\n    Shared arguments (as :class:`~earlystop_predict.policy.monitor."
            "ForecastMonitor` takes them):\n" + lines + "\n")
        return cls

    return decorate


def check_options(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` if ``cls`` takes each of them; TypeError naming the first it does not."""
    allowed = getattr(cls.__init__, "__shared_options__", ())
    for name in options:
        if name not in allowed:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
    return dict(options)


def check_target_epoch(target_epoch: Any) -> int:
    """``target_epoch`` of a search adapter, checked when it is built (not mid-search).

    Raises:
        ConfigError: not an integer >= 2.
    """
    if isinstance(target_epoch, bool) or not isinstance(target_epoch, int) or target_epoch < 2:
        raise ConfigError("target_epoch", "an integer >= 2", target_epoch)
    return target_epoch


class MonitorViews:
    """What every callback shows of its run: the record, the latest decision, the stop.

    The callback holds its :class:`~earlystop_predict.policy.monitor.ForecastMonitor` as
    ``self.monitor``.
    """

    monitor: ForecastMonitor

    @property
    def record(self) -> RunRecord:
        """The run record so far (rows, forecasts, stop)."""
        return self.monitor.record

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the latest epoch (or evaluation), None before the first."""
        return self.monitor.last_decision

    @property
    def stopped(self) -> dict[str, Any] | None:
        """``{"epoch", "reason"}`` once the callback stopped the run, else None."""
        return self.monitor.stopped
