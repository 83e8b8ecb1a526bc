"""Old module paths (before the 0.2 layout), kept for one release as deprecated aliases.

``import earlystop_predict.forecaster`` still works: a finder on ``sys.meta_path``
(installed by the package's ``__init__``) hands back the module at its new path, with
a :class:`DeprecationWarning`. ``earlystop_predict.policy`` and ``earlystop_predict.ledger``
kept their names (they are packages now) and need no alias.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "record": "records.record", "features": "records.features", "forecaster": "forecast",
    "lstm": "forecast.lstm", "lgbm": "forecast.lgbm", "prior": "forecast.prior",
    "calibration": "forecast.calibration", "artifacts": "forecast.artifacts",
    "monitor": "policy.monitor", "collect": "tools.collect.run",
    "collect_families": "tools.collect.families", "collect_train": "tools.collect.train",
    "replay": "tools.replay", "report": "tools.report", "demo": "tools.demo",
    "commands": "cli.commands",
}
_PKG = "earlystop_predict"


def new_name(fullname: str) -> str | None:
    """The module's current path, for an old one (None: not moved)."""
    if not fullname.startswith(_PKG + "."):
        return None
    head, _, tail = fullname[len(_PKG) + 1:].partition(".")
    if head not in MOVED:
        return None
    return f"{_PKG}.{MOVED[head]}" + (f".{tail}" if tail else "")


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, self,
                                               is_package=fullname.endswith(".commands"))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = new_name(spec.name)
        assert new is not None
        warnings.warn(f"{spec.name} is deprecated: import {new} (the alias goes in 0.3)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the one at its new path."""


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Aliases) for f in sys.meta_path):
        sys.meta_path.insert(0, _Aliases())  # before PathFinder: old submodule paths too
