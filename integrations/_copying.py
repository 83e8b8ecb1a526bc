"""Deep copies of a callback for another run that share what must not be copied.

Keras Tuner fits a ``copy.deepcopy`` of each callback for each trial (scikit-learn's
``clone`` copies callbacks passed as parameters, too). A plain deep copy of a
callback copies its accModel (seconds, and a second model in memory per trial), fails
on a :class:`~earlystop_predict.ledger.Ledger` object (an SQLite connection and a lock
cannot be copied) and drags along the Keras model it last trained. The copy made here
shares the accModel and a Ledger object, opens its own ledger where the monitor had
opened one from a path, and holds no trained model.

Example:
    >>> import copy
    >>> from earlystop_predict.ledger import Ledger
    >>> from earlystop_predict.policy.monitor import ForecastMonitor
    >>> class Holder:
    ...     def __init__(self, monitor): self.monitor = monitor
    ...     def __deepcopy__(self, memo):
    ...         shared, dropped = monitor_resources(self.monitor)
    ...         return copy_sharing(self, memo, shared=shared, dropped=dropped)
    >>> h = Holder(ForecastMonitor(ledger=Ledger(":memory:")))
    >>> twin = copy.deepcopy(h)
    >>> twin.monitor is h.monitor, twin.monitor.ledger is h.monitor.ledger
    (False, True)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any, TypeVar

from earlystop_predict.policy.monitor import ForecastMonitor

_T = TypeVar("_T")


def monitor_resources(monitor: ForecastMonitor) -> tuple[list[Any], list[Any]]:
    """``(shared, dropped)``: what copies of ``monitor`` share (the accModel once loaded,
    a Ledger object given as ``ledger=``) and leave out (a ledger the monitor opened
    from a path: the copy opens its own)."""
    arg = monitor._ledger_arg
    shared = [monitor._forecaster]
    if arg is not None and not isinstance(arg, (str, os.PathLike)):
        shared.append(arg)
    opened = monitor._ledger
    dropped = [opened] if opened is not None and opened is not arg else []
    return shared, dropped


def copy_sharing(obj: _T, memo: dict[int, Any], *, shared: Iterable[Any] = (),
                 dropped: Iterable[Any] = ()) -> _T:
    """A deep copy of ``obj`` (for ``obj.__deepcopy__``) in which each of ``shared`` is
    the same object and each of ``dropped`` is None.

    Args:
        obj: the object to copy (its ``__dict__`` is deep-copied).
        memo: the memo ``copy.deepcopy`` hands ``__deepcopy__``.
        shared: objects the copy shares (None entries are skipped). Default none.
        dropped: objects that become None in the copy. Default none.
    """
    for item in shared:
        if item is not None:
            memo.setdefault(id(item), item)
    for item in dropped:
        if item is not None:
            memo.setdefault(id(item), None)
    new = type(obj).__new__(type(obj))
    memo[id(obj)] = new
    for key, value in vars(obj).items():
        new.__dict__[key] = copy.deepcopy(value, memo)
    return new
