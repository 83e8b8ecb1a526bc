"""The layout's arrows, read from the source (every import, at module level or inside a
function): adapters -> policy -> forecast -> records; policy -> ledger -> records; tools
and cli above all; training -> forecast, records. No import cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PKG = REPO_ROOT / "earlystop_predict"
FRAMEWORKS = {"torch", "tensorflow", "keras", "tf_keras", "transformers", "accelerate",
              "lightning", "pytorch_lightning", "lightning_fabric", "optuna", "ray", "sklearn",
              "matplotlib", "pandas", "jax"}
# part -> the parts of the package it may import (besides itself and the shared leaves)
LEAVES = {"errors", "_imports", "_compat"}
MAY_IMPORT = {
    "records": set(),
    "forecast": {"records"},
    "ledger": {"records"},
    "policy": {"forecast", "ledger", "records"},
    "training": {"forecast", "records", "ledger"},
}
CORE = ("records", "forecast", "policy", "ledger")


def _module_of(path: Path) -> str:
    if path.is_relative_to(PKG):
        rel = path.relative_to(PKG).with_suffix("").parts
        base = ["earlystop_predict"]
    else:
        rel = path.relative_to(REPO_ROOT / "integrations").with_suffix("").parts
        base = ["earlystop_predict", "integrations"]
    parts = base + [p for p in rel if p != "__init__"]
    return ".".join(parts)


def _import_statements(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names imported from it)`` of every import in ``path``, relative ones
    resolved (``import m`` gives ``(m, [])``)."""
    mod = _module_of(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, [a.name for a in node.names]))
    return out


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, and of ``pkg.name`` for each
    ``from pkg import name`` (which may be a module)."""
    out: set[str] = set()
    for module, names in _import_statements(path):
        out.add(module)
        out.update(f"{module}.{n}" for n in names)
    return out


FILES = sorted(PKG.rglob("*.py")) + sorted((REPO_ROOT / "integrations").glob("*.py"))
GRAPH = {_module_of(f): _imports(f) for f in FILES}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "earlystop_predict" else None


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_part_imports_only_what_is_below_it(part):
    allowed = MAY_IMPORT[part] | LEAVES | {part}
    bad = []
    for mod, deps in GRAPH.items():
        if _part(mod) != part:
            continue
        for dep in deps:
            top = dep.split(".")[0]
            dep_part = _part(dep)
            if top in FRAMEWORKS and part in CORE:
                bad.append(f"{mod} imports the framework {dep}")
            elif top == "earlystop_predict" and dep_part is not None and dep_part not in allowed \
                    and dep in GRAPH:
                bad.append(f"{mod} imports {dep}")
    assert bad == [], "\n".join(sorted(bad))


def test_core_imports_no_adapter_tool_or_training():
    for mod, deps in GRAPH.items():
        if _part(mod) in CORE:
            hits = {d for d in deps if _part(d) in ("integrations", "tools", "cli", "training")}
            assert not hits, f"{mod} imports {sorted(hits)}"


def test_no_import_cycle():
    edges = {m: {d for d in deps if d in GRAPH and d != m} for m, deps in GRAPH.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of parts: drop
    # the edges from a module to the package that contains it
    for m in edges:
        edges[m] = {d for d in edges[m] if not m.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_adapters_are_the_only_framework_importers_beside_tools():
    for mod, deps in GRAPH.items():
        if _part(mod) in CORE or mod.startswith("earlystop_predict.cli"):
            hits = {d for d in deps if d.split(".")[0] in FRAMEWORKS}
            assert not hits, f"{mod} imports {sorted(hits)}"


OLD_PATHS = {
    "earlystop_predict.forecaster": "earlystop_predict.forecast",
    "earlystop_predict.record": "earlystop_predict.records.record",
    "earlystop_predict.monitor": "earlystop_predict.policy.monitor",
    "earlystop_predict.replay": "earlystop_predict.tools.replay",
    "earlystop_predict.collect": "earlystop_predict.tools.collect.run",
    "earlystop_predict.commands.forecast": "earlystop_predict.cli.commands.forecast",
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_module_paths_alias_the_new_ones_with_a_warning(old):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.")):
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(OLD_PATHS[old])


def test_old_names_still_import():
    import sys

    sys.modules.pop("earlystop_predict.forecaster", None)
    with pytest.warns(DeprecationWarning):
        from earlystop_predict.forecaster import ScriptedForecaster, load_model  # noqa: F401
    from earlystop_predict.ledger import Ledger  # noqa: F401  (kept its name)
    from earlystop_predict.policy import Decision, StopPolicy  # noqa: F401  (kept its name)


def test_every_import_of_the_package_names_a_module_that_exists():
    # A lazy import inside a function fails only when it runs: catch a stale path here.
    missing = sorted(f"{_module_of(f)} imports {dep}" for f in FILES
                     for dep, _ in _import_statements(f)
                     if dep.startswith("earlystop_predict") and dep not in GRAPH)
    assert missing == []
