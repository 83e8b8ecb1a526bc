"""Model directories: the bundled one and those ``earlystop-predict train`` writes.

A model directory holds ``manifest.json`` (schema, version, per-artifact file
and sha256, training data, held-out errors) and the artifacts it names. Loading
checks each artifact's sha256 before use and never executes code from a file:
LSTM weights are ``.npz`` loaded with ``allow_pickle=False``, LightGBM models are
LightGBM's own text format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from earlystop_predict.errors import ModelArtifactError
from earlystop_predict.records.record import jsonable

MANIFEST = "manifest.json"
SCHEMA = 1


def bundled_dir() -> Path:
    """The directory of the bundled artifacts (``earlystop_predict.models``)."""
    return Path(str(resources.files("earlystop_predict.models")))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``directory/manifest.json``.

    Checked: a JSON object of schema :data:`SCHEMA`; ``artifacts`` an object whose
    entries are objects with a string ``file`` (a relative path inside the directory)
    and a string ``sha256``; ``blend``, where present, an object whose ``weight`` is a
    number in [0, 1], and ``ensemble`` one whose ``lstm_weight`` is.

    Raises:
        ModelArtifactError: missing, unreadable, of an unknown schema or malformed
            (names the file and the field).
    """
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelArtifactError(path, "no manifest.json: not a model directory") from None
    except (OSError, ValueError, RecursionError) as exc:  # JSON, UTF-8, nesting
        raise ModelArtifactError(path, f"unreadable manifest: {exc}") from None
    if not isinstance(data, dict):
        raise ModelArtifactError(path, "manifest is not an object")
    if data.get("schema") != SCHEMA:
        raise ModelArtifactError(path, f"unknown manifest schema {data.get('schema')!r}")
    problem = _manifest_problem(data)
    if problem:
        raise ModelArtifactError(path, problem)
    return data


def _manifest_problem(data: dict[str, Any]) -> str:
    """What is malformed in a manifest's ``artifacts``, ``blend`` and ``ensemble``, or
    ``""``."""
    arts = data.get("artifacts")
    if not isinstance(arts, dict):
        return "field 'artifacts' must be an object"
    for name, entry in arts.items():
        if not isinstance(entry, dict):
            return f"field 'artifacts.{name}' must be an object"
        for key in ("file", "sha256"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                return f"field 'artifacts.{name}.{key}' must be a non-empty string"
        if not _relative_inside(entry["file"]):
            return (f"field 'artifacts.{name}.file' {entry['file']!r} must be a relative "
                    "path inside the model directory")
    for field, key, default in (("blend", "weight", 1.0), ("ensemble", "lstm_weight", None)):
        entry = data.get(field)
        if entry is None:
            continue
        weight = entry.get(key, default) if isinstance(entry, dict) else None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not 0.0 <= weight <= 1.0:
            return f"field '{field}.{key}' must be a number in [0, 1]"
    return ""


def _relative_inside(name: str) -> bool:
    """Whether a manifest's file name is a plain relative path with no ``..``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    return not (pure.is_absolute() or ".." in pure.parts or ":" in name or "\0" in name)


def artifact_path(directory: str | os.PathLike[str], manifest: dict[str, Any],
                  name: str) -> Path:
    """Path of artifact ``name`` after checking it exists inside the directory (a
    symlink may not lead out of it) and matches its sha256.

    Raises:
        ModelArtifactError: not listed, outside the directory, missing, or failing its
            checksum (names the file).
    """
    entry = manifest.get("artifacts", {}).get(name)
    if not entry:
        raise ModelArtifactError(Path(directory) / MANIFEST, f"lists no {name!r} artifact")
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
            or not _relative_inside(entry["file"]):
        raise ModelArtifactError(Path(directory) / MANIFEST,
                                 f"artifact {name!r} is not a relative path inside the "
                                 "model directory")
    path = Path(directory) / entry["file"]
    try:
        path.resolve().relative_to(Path(directory).resolve())
    except (ValueError, OSError, RuntimeError):  # outside, or a symlink loop
        raise ModelArtifactError(path, "leads outside the model directory") from None
    if not path.is_file():
        raise ModelArtifactError(path, "artifact file is missing")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise ModelArtifactError(path, f"sha256 mismatch (expected {entry.get('sha256')}, "
                                       f"got {digest}): corrupt or replaced")
    return path


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (schema filled in)."""
    path = Path(directory) / MANIFEST
    data = {"schema": SCHEMA, **manifest}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------ LightGBM text
#: Largest tree the checker accepts (LightGBM's own limit on num_leaves is 131072).
MAX_LEAVES = 131072
_DT_KNOWN = 1 | 2 | 12  # categorical, default-left, missing type (two bits)


class LightGBMTextError(ValueError):
    """A LightGBM model text that must not reach LightGBM's parser (why in the message)."""


def check_lightgbm_text(model: str) -> tuple[str, int]:
    """Check one LightGBM model text before LightGBM parses it.

    LightGBM parses the trees of a text with a ``tree_sizes`` header in parallel, and
    an error inside that parallel region aborts the process (``terminate``, SIGABRT)
    instead of raising: a damaged tree would kill a training run from inside its
    callback. So the text handed to LightGBM has no ``tree_sizes`` line (its trees are
    parsed one after another, and a parse error raises ``LightGBMError``) and ends
    with its trees (the feature importances and training parameters after them, which
    prediction does not use, are left out: a damaged parameter line crashes the
    parser too), and what
    LightGBM's parser does not check is checked here, for all trees at once: each
    tree holds each field once, with the number of values its ``num_leaves`` implies;
    children and split features are in range; leaf values are finite and thresholds
    numbers; decision types are known; the text ends with its trees (a truncated one
    would load with fewer).

    Args:
        model: one model's text (``Booster.model_to_string()``).

    Returns:
        The text to parse (the header and the trees, ``tree_sizes`` removed) and the
        number of trees it holds.

    Raises:
        LightGBMTextError: what is wrong, naming the field and the tree.
    """
    head, sep, rest = model.partition("\nTree=")
    end = rest.find("\nend of trees")
    if not sep or end < 0:
        raise LightGBMTextError("no trees" if not sep else "truncated: no 'end of trees'")
    header = _key_values(head)
    max_feature = _check_header(head, header)
    trees = _Trees("\nTree=" + rest[:end] + "\n")
    trees.check_lines()
    _check_trees(trees, max_feature)
    if "tree_sizes" in header:
        if len(header["tree_sizes"].split()) != trees.n:
            raise LightGBMTextError(f"header lists {len(header['tree_sizes'].split())} "
                                    f"trees, the text holds {trees.n}")
        head = "\n".join(ln for ln in head.split("\n") if not ln.startswith("tree_sizes="))
    return head + sep + rest[:end] + "\nend of trees\n", trees.n


_HEADER_KEYS = {"version", "num_class", "num_tree_per_iteration", "label_index",
                "max_feature_idx", "objective", "feature_names", "feature_infos", "tree_sizes",
                "monotone_constraints"}
_TREE_KEYS = {"Tree", "num_leaves", "num_cat", "split_feature", "split_gain", "threshold",
              "decision_type", "left_child", "right_child", "leaf_value", "leaf_weight",
              "leaf_count", "internal_value", "internal_weight", "internal_count",
              "is_linear", "shrinkage"}
_OBJECTIVE = re.compile(r"(regression|regression_l1|quantile|huber|fair|poisson|mape|gamma"
                        r"|tweedie)( [a-z_]+:[-+0-9.eE]+)*")


def _check_header(head: str, header: dict[str, str]) -> int:
    """Check a model text's header (one-output regression, known keys only); return
    its ``max_feature_idx``."""
    lines = [ln for ln in head.split("\n") if ln and ln != "tree"]
    unknown = [ln[:40] for ln in lines if ln.partition("=")[0] not in _HEADER_KEYS]
    if unknown or len(lines) != len(header):
        raise LightGBMTextError(f"header: unknown or repeated line {(unknown or lines)[0]!r}")
    for key, want in (("num_class", "1"), ("num_tree_per_iteration", "1"),
                      ("label_index", "0")):
        if header.get(key) != want:
            raise LightGBMTextError(f"header: {key} must be {want} (one-output models)")
    if not _OBJECTIVE.fullmatch(header.get("objective", "")):
        raise LightGBMTextError("header: objective is not a known regression objective")
    try:
        max_feature = int(header["max_feature_idx"])
    except (KeyError, ValueError):
        raise LightGBMTextError("header: max_feature_idx missing or not an integer") from None
    for key in ("feature_names", "feature_infos"):
        if len(header.get(key, "").split(" ")) != max_feature + 1 or max_feature < 0:
            raise LightGBMTextError(f"header: {key} must hold max_feature_idx + 1 values")
    return max_feature


def _key_values(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.split("\n"):
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


class _Trees:
    """The trees section of a model text, read one field at a time for all trees."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.starts = np.array([m.start() for m in re.finditer(r"\nTree=", body)])
        self.n = len(self.starts)

    def check_lines(self) -> None:
        """Every line a ``Tree=<index>`` line, a known field or empty (LightGBM looks
        for its section markers, such as ``parameters:``, anywhere in the text)."""
        keys = set(re.findall(r"\n([^=\n]*)=", self.body))
        if not keys <= _TREE_KEYS or re.search(r"\n[^=\n]+\n", self.body):
            odd = sorted(keys - _TREE_KEYS) or ["a line that is not key=value"]
            raise LightGBMTextError(f"trees: unknown line {odd[0][:40]!r}")
        tree_lines = re.findall(r"\nTree=([^\n]*)", self.body)
        if tree_lines != [str(i) for i in range(self.n)]:
            raise LightGBMTextError("trees: Tree=<index> lines out of order")

    def field(self, key: str, counts: np.ndarray, dtype: type,
              refuse: str = "") -> np.ndarray:
        """All values of field ``key``, which tree i holds once with ``counts[i]``
        values (a tree of no values may leave it out); raises
        :class:`LightGBMTextError` otherwise. Integer fields are parsed (their ranges
        are checked); ``float`` ones only counted and searched for the characters
        ``refuse`` (a number is made of digits, ``.+-eE``: an ``n`` means NaN or
        infinity, an ``a`` NaN; LightGBM's parser raises on any other token that is not
        a number)."""
        lines, where = self._lines(key, counts)
        per = np.array([ln.count(" ") + 1 if ln else 0 for ln in lines], dtype=np.int64)
        joined = " ".join(ln for ln in lines if ln)
        wrong = per != counts[where] if len(where) else np.zeros(0, dtype=bool)
        if wrong.any() or "  " in joined or joined != joined.strip():
            bad = int(where[np.argmax(wrong)]) if wrong.any() else int(where[0])
            raise LightGBMTextError(f"tree {bad}: field {key} has the wrong number of values")
        if dtype is float:  # counted only: LightGBM's parser refuses what is not a number
            if any(c in joined for c in refuse):
                raise LightGBMTextError(f"field {key}: a value that is not finite")
            return np.empty(0)
        return _parse_ints(key, joined, int(counts.sum()))

    def _lines(self, key: str, counts: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The values text of each ``key=`` line and the tree holding it; each tree
        of ``counts > 0`` must hold one, none two."""
        found = list(re.finditer(rf"\n{key}=([^\n]*)", self.body))
        where = np.searchsorted(self.starts, [m.start() for m in found], side="right") - 1
        needed = np.flatnonzero(counts > 0)
        missing = needed[~np.isin(needed, where)]
        if (np.diff(where) <= 0).any() or (where < 0).any() or missing.size:
            bad = missing[:1].tolist() or where[:1].tolist() or [0]
            raise LightGBMTextError(f"tree {bad[0]}: field {key} missing or repeated")
        return [m.group(1) for m in found], where


def _parse_ints(key: str, joined: str, n: int) -> np.ndarray:
    """``n`` integers from space-separated text (LightGBMTextError otherwise)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # older numpy: short read
            values = np.fromstring(joined, dtype=np.int64, sep=" ") if joined \
                else np.empty(0, np.int64)
    except ValueError:  # numpy 2: a token that is not a number
        values = np.empty(0, np.int64)
    if len(values) != n:
        raise LightGBMTextError(f"field {key}: a value that is not an integer")
    return values


def _check_trees(trees: _Trees, max_feature: int) -> None:
    ones = np.ones(trees.n, dtype=np.int64)
    leaves = trees.field("num_leaves", ones, np.int64)
    if (leaves < 1).any() or (leaves > MAX_LEAVES).any():
        raise LightGBMTextError(f"tree {int(np.argmax((leaves < 1) | (leaves > MAX_LEAVES)))}: "
                                f"num_leaves outside [1, {MAX_LEAVES}]")
    if trees.field("num_cat", ones, np.int64).any() or \
            trees.field("is_linear", ones, np.int64).any():
        raise LightGBMTextError("categorical or linear trees are not used here")
    trees.field("leaf_value", leaves, float, refuse="nN")  # nan, inf
    inner_all = leaves - 1  # values per tree of the split fields (none in a stump)
    inner = inner_all[inner_all > 0]
    trees.field("threshold", inner_all, float, refuse="aA")  # nan; inf is an open end
    feat = trees.field("split_feature", inner_all, np.int64)
    if feat.size and (feat.min() < 0 or feat.max() > max_feature):
        raise LightGBMTextError(f"field split_feature: outside [0, {max_feature}]")
    dt = trees.field("decision_type", inner_all, np.int64)
    if ((dt < 0) | (dt & ~_DT_KNOWN).astype(bool) | (dt & 1).astype(bool)
            | ((dt >> 2) & 3 == 3)).any():
        raise LightGBMTextError("field decision_type: unknown")
    lo, hi = np.repeat(-(inner + 1), inner), np.repeat(inner - 1, inner)
    for side in ("left_child", "right_child"):
        child = trees.field(side, inner_all, np.int64)
        if ((child < lo) | (child > hi)).any():
            raise LightGBMTextError(f"field {side}: a child outside its tree")
