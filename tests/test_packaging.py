"""Packaging: sdist, wheel built from it (as ``python -m build`` does) and editable install.

Everything is offline: setuptools' PEP 517 backend is called directly in a
subprocess (no build isolation, no index), the wheel is installed with
``pip install --no-deps --no-index --target``. The source tree is copied first,
so the build leaves nothing in the checkout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_python

PKG = "earlystop_predict"
MODEL_EXTS = (".json", ".npz", ".txt", ".gz", ".md")   # [options.package_data] of setup.cfg
_SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache",
              ".ruff_cache", "runs", "tmp", ".mypy_cache"}


@dataclass(frozen=True)
class Built:
    """What the module fixture built: the copied source, the sdist and the wheel."""

    src: Path
    sdist: Path
    wheel: Path
    root: Path

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as zf:
            return set(zf.namelist())

    def wheel_bytes(self, name: str) -> bytes:
        with zipfile.ZipFile(self.wheel) as zf:
            return zf.read(name)


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in _SKIP_DIRS or n.endswith(".egg-info")
            or n.startswith(".venv") or n.endswith(".pyc")}


def _copy_tree(dest: Path) -> None:
    """Copy the checkout: what git would commit (tracked + untracked, not ignored)."""
    proc = None
    if (REPO_ROOT / ".git").exists() and shutil.which("git"):
        proc = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                              cwd=REPO_ROOT, capture_output=True, timeout=60, check=False)
    if proc is None or proc.returncode != 0:
        shutil.copytree(REPO_ROOT, dest, ignore=_ignore)
        return
    for rel in filter(None, proc.stdout.decode().split("\0")):
        src = REPO_ROOT / rel
        if src.is_file():            # listed but deleted in the work tree: skip
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _backend(call: str, out: Path, cwd: Path) -> Path:
    """Run ``setuptools.build_meta.<call>(out)`` in ``cwd``; return the built file."""
    code = ("import sys\nfrom setuptools import build_meta as b\n"
            f"print(b.{call}(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"{call} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out / proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """sdist of a copy of the tree, then a wheel built from the unpacked sdist."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    _copy_tree(src)
    sdist = _backend("build_sdist", root / "sdist", src)
    unpacked = root / "unpacked"
    with tarfile.open(sdist) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(unpacked, filter="data")
        else:  # pragma: no cover - Python < 3.10.12
            tf.extractall(unpacked)  # our own freshly built sdist
    (top,) = list(unpacked.iterdir())
    wheel = _backend("build_wheel", root / "wheel", top)
    return Built(src=src, sdist=sdist, wheel=wheel, root=root)


def _model_files(src: Path) -> list[Path]:
    return sorted(p for p in (src / "models").iterdir() if p.suffix in MODEL_EXTS)


def _manifest(src: Path) -> dict | None:
    path = src / "models" / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# ----------------------------------------------------------------------------- sdist
def test_sdist_holds_everything_a_build_needs(built):
    with tarfile.open(built.sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for required in ("setup.cfg", "pyproject.toml", "integrations/__init__.py",
                     "models/__init__.py", f"{PKG}/__init__.py", f"{PKG}/cli/main.py"):
        assert required in names
    if (built.src / "README.md").exists():
        assert "README.md" in names
    for path in (built.src / "integrations").glob("*.py"):
        assert f"integrations/{path.name}" in names
    for path in _model_files(built.src):
        assert f"models/{path.name}" in names, f"sdist lacks models/{path.name}"
    assert not any(n.startswith((".venv", ".git/", "build/")) for n in names)


# ----------------------------------------------------------------------------- wheel
def test_wheel_holds_only_the_package(built):
    names = built.wheel_names()
    dist_info = f"{PKG}-"
    assert all(n.startswith((f"{PKG}/", dist_info)) for n in names), sorted(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_wheel_holds_core_commands_and_training(built):
    names = built.wheel_names()
    for path in (built.src / PKG).rglob("*.py"):
        rel = path.relative_to(built.src).as_posix()
        assert rel in names, f"wheel lacks {rel}"
    assert f"{PKG}/training/__init__.py" in names


def test_wheel_maps_integrations_into_the_package(built):
    names = built.wheel_names()
    adapters = sorted((built.src / "integrations").glob("*.py"))
    assert adapters, "integrations/ holds no module"
    for path in adapters:
        assert f"{PKG}/integrations/{path.name}" in names
    assert not any(n.startswith("integrations/") for n in names)


def test_wheel_ships_every_model_file(built):
    # Holds now (only models/__init__.py may exist yet) and once artifacts are trained.
    names = built.wheel_names()
    assert f"{PKG}/models/__init__.py" in names
    for path in _model_files(built.src):
        name = f"{PKG}/models/{path.name}"
        assert name in names, f"wheel lacks {name}: check [options.package_data]"
        assert built.wheel_bytes(name) == path.read_bytes()


def test_wheel_ships_the_real_corpus_and_its_datasheet(built):
    # `earlystop-predict train` reads it from the installed package by default.
    names = built.wheel_names()
    for rel in ("corpus/runs.jsonl.gz", "corpus/DATASHEET.md"):
        path = built.src / "models" / rel
        if path.is_file():
            assert built.wheel_bytes(f"{PKG}/models/{rel}") == path.read_bytes()
    assert f"{PKG}/models/corpus/ledger.db" not in names


def test_wheel_ships_the_manifest_and_its_artifacts(built):
    manifest = _manifest(built.src)
    if manifest is None:
        pytest.skip("models/manifest.json not trained yet: nothing to check beyond "
                    "test_wheel_ships_every_model_file")
    names = built.wheel_names()
    assert f"{PKG}/models/manifest.json" in names
    artifacts = manifest.get("artifacts", {})
    assert artifacts, "manifest.json lists no artifacts"
    for key, entry in artifacts.items():
        name = f"{PKG}/models/{entry['file']}"
        assert name in names, f"artifact {key!r}: wheel lacks {name}"
        digest = hashlib.sha256(built.wheel_bytes(name)).hexdigest()
        assert digest == entry["sha256"], f"artifact {key!r}: sha256 differs in the wheel"


def test_wheel_metadata(built):
    with zipfile.ZipFile(built.wheel) as zf:
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(info).decode()
        entry_points = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "earlystop-predict = earlystop_predict.cli:main" in entry_points
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    core = sorted(r.split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    # threadpoolctl: pure Python, no dependencies; batched forecasting keeps BLAS on one
    # thread with it (README, "Install").
    assert core == ["lightgbm", "numpy", "threadpoolctl"], \
        "the core's install_requires changed: keep it minimal (and justify it in the README)"
    for extra in ("keras", "transformers", "lightning", "all", "dev"):
        assert f"Provides-Extra: {extra}" in meta
    torch_pins = {r.split(";")[0].replace(" ", "") for r in requires if r.startswith("torch")}
    assert torch_pins == {"torch==2.13.0"}


# ----------------------------------------------------------------------------- installed wheel
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import earlystop_predict, earlystop_predict.integrations, earlystop_predict.models
from importlib import resources
models = resources.files("earlystop_predict.models")
out = {
    "pkg": earlystop_predict.__file__,
    "integrations": earlystop_predict.integrations.__file__,
    "models": str(models),
    "model_files": sorted(p.name for p in models.iterdir() if p.is_file()),
    "manifest": (json.loads(models.joinpath("manifest.json").read_text())
                 if models.joinpath("manifest.json").is_file() else None),
    "version": earlystop_predict.__version__,
}
try:
    from earlystop_predict.forecast.artifacts import bundled_dir
except ImportError:
    out["bundled_dir"] = None
else:
    out["bundled_dir"] = str(bundled_dir())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(built) -> Path:
    """The wheel installed with pip into an empty target folder (no deps, no index)."""
    target = built.root / "target"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--no-compile", "--disable-pip-version-check", "--target",
                           str(target), str(built.wheel)],
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def test_installed_wheel_imports_from_the_target(built, installed, tmp_path):
    proc = subprocess.run([sys.executable, "-I", "-c", PROBE, str(installed)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    pkg_dir = installed / PKG
    assert Path(got["pkg"]).parent == pkg_dir
    assert Path(got["integrations"]).parent == pkg_dir / "integrations"
    assert Path(got["models"]) == pkg_dir / "models"
    expected = sorted(p.name for p in _model_files(built.src)) + ["__init__.py"]
    assert sorted(set(got["model_files"]) - {"__pycache__"}) == sorted(expected)
    assert got["manifest"] == _manifest(built.src)
    if got["bundled_dir"] is not None:
        assert Path(got["bundled_dir"]) == pkg_dir / "models"


def test_installed_wheel_cli_runs(installed, tmp_path):
    proc = subprocess.run([sys.executable, "-I", "-c",
                           "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from earlystop_predict.cli import main; main(['--version'])",
                           str(installed)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("earlystop-predict ")


# ----------------------------------------------------------------------------- editable
def _editable_here() -> bool:
    """Whether pip installed this checkout editable (an in-tree egg-info is not that)."""
    for dist in metadata.distributions(name=PKG):
        info = json.loads(dist.read_text("direct_url.json") or "{}")
        if info.get("dir_info", {}).get("editable") and \
                Path(info.get("url", "").removeprefix("file://")) == REPO_ROOT:
            return True
    return False


@pytest.mark.skipif(not _editable_here(),
                    reason="earlystop_predict is not installed editable from this checkout")
def test_editable_install_maps_package_dirs(tmp_path):
    proc = run_python(
        "import json, earlystop_predict.integrations as i, earlystop_predict.models as m\n"
        "from importlib import resources\n"
        "print(json.dumps([i.__file__, str(resources.files('earlystop_predict.models'))]))",
        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    integrations, models = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(integrations) == REPO_ROOT / "integrations" / "__init__.py"
    assert Path(models) == REPO_ROOT / "models"
