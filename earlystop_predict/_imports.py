"""Deferred imports of optional frameworks.

The core never imports a deep-learning framework. Adapter modules call
:func:`require` at import time so that a missing framework fails with an error
naming the extra to install, not a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from earlystop_predict.errors import MissingExtraError


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``.

    Args:
        module: import name, e.g. ``"keras"`` or ``"lightning.pytorch"``.
        extra: the earlystop_predict extra that installs it, e.g. ``"keras"``.

    Example:
        >>> np = require("numpy", extra="core")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.split(".")[0], extra) from exc
