"""Import hygiene: the core loads no framework; a missing framework names its extra.

Each check runs in a fresh interpreter (``sys.modules`` of the test process is
full of frameworks other tests loaded). The child runs outside the repository,
so it imports the installed package, as a user would.
"""

from __future__ import annotations

import json
import pkgutil
import sys

import pytest
from conftest import REPO_ROOT, run_python

import earlystop_predict

# Frameworks and heavy optional libraries that must load only when asked for.
FORBIDDEN = ("torch", "tensorflow", "keras", "tf_keras", "transformers", "accelerate",
             "lightning", "pytorch_lightning", "lightning_fabric", "lightgbm", "jax", "optuna",
             "ray", "sklearn", "scipy", "matplotlib", "pandas")
# What the core may import beyond the standard library: its install_requires, less
# lightgbm, which is loaded lazily by the LightGBM forecaster.
ALLOWED_THIRD_PARTY = {"numpy", "earlystop_predict"}

# The framework modules to hide to simulate a missing extra, per adapter module.
ADAPTER_SHIMS: dict[str, tuple[str, ...]] = {
    "keras": ("keras", "tensorflow", "tf_keras"),
    "transformers": ("transformers",),
    "lightning": ("lightning", "pytorch_lightning"),
    "optuna": ("optuna",),
    "ray": ("ray",),
    "keras_tuner": ("keras_tuner",),
}
# Adapter modules (framework-specific); ``_``-prefixed ones are framework-free helpers.
ADAPTERS = sorted(p.stem for p in (REPO_ROOT / "integrations").glob("*.py")
                  if not p.stem.startswith("_"))
HELPERS = sorted(p.stem for p in (REPO_ROOT / "integrations").glob("_*.py")
                 if p.stem != "__init__")


def _core_modules() -> list[str]:
    """Every framework-neutral module: earlystop_predict.* (not the training pipeline),
    the CLI and its commands, the tools, the integrations/models packages and the
    adapters' helpers."""
    mods = ["earlystop_predict", "earlystop_predict.integrations", "earlystop_predict.models"]
    mods += [f"earlystop_predict.integrations.{name}" for name in HELPERS]
    for info in pkgutil.walk_packages(earlystop_predict.__path__, "earlystop_predict."):
        if info.name.startswith("earlystop_predict.training") or info.name.endswith("__main__"):
            continue                          # the ``train`` extra's pipeline; ``python -m``
        mods.append(info.name)
    return sorted(set(mods))


CORE_MODULES = _core_modules()

PROBE = """
import argparse, importlib, json, sys
before = set(sys.modules)
for name in {mods!r}:
    importlib.import_module(name)
from earlystop_predict.cli import build_parser
parser = build_parser()
new = sorted(set(sys.modules) - before)
sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
print(json.dumps({{"new": new, "commands": sorted(sub.choices)}}))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    """Modules loaded by importing every core module and building the CLI parser."""
    proc = run_python(PROBE.format(mods=CORE_MODULES), cwd=tmp_path_factory.mktemp("probe"))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _roots(names: list[str]) -> set[str]:
    return {n.split(".", 1)[0] for n in names}


def test_core_modules_are_found():
    for name in ("earlystop_predict.records.record", "earlystop_predict.records.features",
                 "earlystop_predict.policy.stop", "earlystop_predict.policy.monitor",
                 "earlystop_predict.forecast.base", "earlystop_predict.cli.main",
                 "earlystop_predict.errors", "earlystop_predict._imports"):
        assert name in CORE_MODULES


def test_core_and_cli_load_no_framework(probe):
    loaded = sorted(_roots(probe["new"]) & set(FORBIDDEN))
    assert loaded == [], f"importing {CORE_MODULES} loaded {loaded}"


def test_core_needs_nothing_beyond_install_requires(probe):
    third_party = sorted(r for r in _roots(probe["new"])
                         if r not in sys.stdlib_module_names and r not in ALLOWED_THIRD_PARTY
                         and not r.startswith("_"))
    assert third_party == [], f"the core imports {third_party}, outside install_requires"


def test_cli_parser_builds_with_known_commands(probe):
    from earlystop_predict.cli import COMMANDS

    assert set(probe["commands"]) <= set(COMMANDS)


def test_plain_import_is_light():
    proc = run_python("import sys, earlystop_predict; "
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                      f"{FORBIDDEN!r}))", cwd=REPO_ROOT / "tests")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- missing extras
SHIM = """
import json, sys
for name in {hide!r}:
    sys.modules[name] = None          # what a missing package looks like to import
from earlystop_predict.errors import MissingExtraError
try:
    {stmt}
except MissingExtraError as exc:
    print(json.dumps({{"module": exc.module, "extra": exc.extra, "msg": str(exc),
                      "import_error": isinstance(exc, ImportError)}}))
else:
    print(json.dumps(None))
"""


def _shimmed(hide: tuple[str, ...], stmt: str, tmp_path) -> dict | None:
    proc = run_python(SHIM.format(hide=list(hide), stmt=stmt), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_require_names_the_extra(tmp_path):
    got = _shimmed(("keras",), "from earlystop_predict._imports import require; "
                               "require('keras', extra='keras')", tmp_path)
    assert got == {"module": "keras", "extra": "keras", "import_error": True,
                   "msg": "needs keras: pip install 'earlystop_predict[keras]'"}


def test_require_of_submodule_names_the_package(tmp_path):
    got = _shimmed(("lightning",), "from earlystop_predict._imports import require; "
                                   "require('lightning.pytorch', extra='lightning')", tmp_path)
    assert got and got["module"] == "lightning" and got["extra"] == "lightning"


def test_require_returns_present_module():
    from earlystop_predict._imports import require

    assert require("json", extra="core") is json


def test_every_adapter_has_a_shim():
    assert set(ADAPTERS) <= set(ADAPTER_SHIMS), (
        f"add the framework modules of {set(ADAPTERS) - set(ADAPTER_SHIMS)} to ADAPTER_SHIMS")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapter_without_its_framework_names_the_extra(adapter, tmp_path):
    got = _shimmed(ADAPTER_SHIMS[adapter],
                   f"import earlystop_predict.integrations.{adapter}", tmp_path)
    assert got is not None, f"integrations/{adapter}.py imported with its framework hidden"
    assert got["extra"] == adapter
    assert got["import_error"]
    assert f"pip install 'earlystop_predict[{adapter}]'" in got["msg"]

