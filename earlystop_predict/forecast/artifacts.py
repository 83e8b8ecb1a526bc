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
from importlib import resources
from pathlib import Path
from typing import Any

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

    Raises:
        ModelArtifactError: missing, unreadable, or of an unknown schema (names the file).
    """
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelArtifactError(path, "no manifest.json: not a model directory") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelArtifactError(path, f"unreadable manifest: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ModelArtifactError(path, f"unknown manifest schema {data.get('schema')!r}"
                                 if isinstance(data, dict) else "manifest is not an object")
    return data


def artifact_path(directory: str | os.PathLike[str], manifest: dict[str, Any],
                  name: str) -> Path:
    """Path of artifact ``name`` after checking it exists and matches its sha256.

    Raises:
        ModelArtifactError: not listed, missing, or failing its checksum (names the file).
    """
    entry = manifest.get("artifacts", {}).get(name)
    if not entry:
        raise ModelArtifactError(Path(directory) / MANIFEST, f"lists no {name!r} artifact")
    path = Path(directory) / entry["file"]
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
