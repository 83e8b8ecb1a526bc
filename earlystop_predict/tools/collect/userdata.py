"""Offline data of the collector's "what users train" families: text, images, big tables.

Every generator takes the run's data parameters (drawn by the family, see
:mod:`~earlystop_predict.tools.collect.families`) and a seeded generator and returns
``(x, y, num_classes)``; nothing is downloaded (the only bundled set is
scikit-learn's ``load_digits``). No framework is imported.

- :func:`texts` -- token sequences for ``text-hf-steps``: planted class keywords
  against distractors, the order of two marker tokens, the XOR of two markers'
  presence, or which of two token sets is more frequent. Token 0 is padding, 1 a
  leading ``[CLS]``.
- :func:`images` -- ``(n, side, side)`` images for ``images-cnn``: load_digits
  upsampled (bilinear), rasterised shapes at random positions and sizes, or oriented
  gratings (orientation x frequency classes, random phase); plus pixel noise.
- :func:`tabular` -- make_classification with many classes and a Zipf-like class
  imbalance (``tabular-large``, ``keras-mlp``, ``lightning-sched``).

Example:
    >>> import numpy as np
    >>> x, y, k = texts({"task": "order", "vocab_size": 40, "seq_len": 12, "n_samples": 8,
    ...                  "n_classes": 3, "flip_y": 0.0}, np.random.default_rng(0))
    >>> x.shape, k, bool(((x[:, 1:] == 2).sum(1) == 1).all())
    ((8, 12), 2, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from earlystop_predict._imports import require

TEXT_TASKS = ("keywords", "order", "pair", "count")
IMAGE_KINDS = ("digits", "shapes", "textures")
SHAPES = ("circle", "square", "triangle", "cross", "ring", "hbar", "vbar", "diamond")


def flip_labels(y: np.ndarray, rate: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """``y`` with a ``rate`` share (in [0, 1]) replaced by uniformly random classes."""
    if rate <= 0:
        return y
    flip = rng.uniform(size=len(y)) < rate
    y = y.copy()
    y[flip] = rng.integers(0, k, size=int(flip.sum()))
    return y


# ----------------------------------------------------------------------------- text
def _keywords(n: int, t: int, v: int, k: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """Each class owns a few keywords; a sequence holds 2-3 of its class's and one
    fewer of another class's (a distractor): the label is the majority."""
    per = max(1, min(4, (v - 4) // k))
    keywords = rng.permutation(np.arange(4, v))[: per * k].reshape(k, per)
    y = rng.integers(0, k, size=n)
    x = rng.integers(4, v, size=(n, t))
    for i in range(n):
        own = int(rng.integers(2, 4))
        pos = rng.choice(np.arange(1, t), size=min(2 * own - 1, t - 1), replace=False)
        other = (y[i] + 1 + int(rng.integers(k - 1))) % k if k > 1 else y[i]
        x[i, pos[:own]] = rng.choice(keywords[y[i]], size=len(pos[:own]))
        x[i, pos[own:]] = rng.choice(keywords[other], size=len(pos[own:]))
    return x, y


def _order(n: int, t: int, v: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """Markers 2 and 3 once each: label 1 if 2 comes first."""
    x = rng.integers(4, v, size=(n, t))
    pos = np.stack([rng.choice(np.arange(1, t), size=2, replace=False) for _ in range(n)])
    x[np.arange(n), pos[:, 0]], x[np.arange(n), pos[:, 1]] = 2, 3
    return x, (pos[:, 0] < pos[:, 1]).astype(np.int64)


def _pair(n: int, t: int, v: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """Markers 2 and 3 each present with probability 1/2: label = XOR of presences."""
    x = rng.integers(4, v, size=(n, t))
    has = rng.uniform(size=(n, 2)) < 0.5
    for i in range(n):
        pos = rng.choice(np.arange(1, t), size=2, replace=False)
        for j in range(2):
            if has[i, j]:
                x[i, pos[j]] = 2 + j
    return x, (has[:, 0] ^ has[:, 1]).astype(np.int64)


def _count(n: int, t: int, v: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """Tokens 4-6 (set A) and 7-9 (set B) sprinkled at ~30 % of the positions: label 1
    if A outnumbers B (an odd number of them, so no ties)."""
    x = rng.integers(10, max(11, v), size=(n, t))
    y = np.zeros(n, dtype=np.int64)
    for i in range(n):
        m = max(1, int(rng.binomial(t - 1, 0.3)))
        m -= 1 - m % 2
        m = max(1, m)
        pos = rng.choice(np.arange(1, t), size=m, replace=False)
        a = rng.uniform(size=m) < 0.5
        x[i, pos] = np.where(a, rng.integers(4, 7, size=m), rng.integers(7, 10, size=m))
        y[i] = int(a.sum() * 2 > m)
    return x, y


def texts(d: Mapping[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Token sequences ``(n, seq_len)`` int64 (token 1 first) and labels.

    Args:
        d: ``task`` (one of :data:`TEXT_TASKS`), ``vocab_size`` (>= 12), ``seq_len``
            (>= 4), ``n_samples``, ``n_classes`` (keywords only; the others are
            binary), ``flip_y`` (label noise share).
        rng: the run's generator.
    """
    n, t, v = int(d["n_samples"]), int(d["seq_len"]), max(12, int(d["vocab_size"]))
    task, k = str(d["task"]), 2
    if task == "keywords":
        k = int(d["n_classes"])
        x, y = _keywords(n, t, v, k, rng)
    elif task == "order":
        x, y = _order(n, t, v, rng)
    elif task == "pair":
        x, y = _pair(n, t, v, rng)
    else:
        x, y = _count(n, t, v, rng)
    x[:, 0] = 1
    return x.astype(np.int64), flip_labels(y.astype(np.int64), float(d["flip_y"]), k, rng), k


# ----------------------------------------------------------------------------- images
def _upsampled_digits(side: int) -> tuple[np.ndarray, np.ndarray]:
    ndimage = require("scipy.ndimage", extra="collect")
    b = require("sklearn.datasets", extra="collect").load_digits()
    imgs = b.images.astype(np.float32) / 16.0
    zoom = ndimage.zoom(imgs, (1, side / 8, side / 8), order=1)
    return zoom[:, :side, :side].astype(np.float32), b.target.astype(np.int64)


def _shape_mask(name: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    dist = np.sqrt(dx ** 2 + dy ** 2)
    w = max(1.0, r / 3)
    masks = {
        "circle": dist <= r, "square": np.maximum(abs(dx), abs(dy)) <= r,
        "triangle": (dy <= r) & (dy >= -r) & (abs(dx) <= (dy + r) / 2),
        "cross": ((abs(dx) <= w / 2) | (abs(dy) <= w / 2)) & (np.maximum(abs(dx), abs(dy)) <= r),
        "ring": abs(dist - r) <= max(0.8, r / 5), "hbar": (abs(dy) <= w / 2) & (abs(dx) <= r),
        "vbar": (abs(dx) <= w / 2) & (abs(dy) <= r), "diamond": abs(dx) + abs(dy) <= r,
    }
    return masks[name]


def _shapes(n: int, side: int, k: int, rng: np.random.Generator) -> tuple[Any, Any]:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    names = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:k]]
    y = rng.integers(0, k, size=n)
    x = np.zeros((n, side, side), np.float32)
    for i in range(n):
        r = float(rng.uniform(0.18, 0.35) * side)
        cx, cy = rng.uniform(r, side - 1 - r, size=2)
        x[i] = _shape_mask(names[y[i]], xx - cx, yy - cy, r) * rng.uniform(0.5, 1.0)
    return x, y


def _textures(n: int, side: int, k: int, rng: np.random.Generator) -> tuple[Any, Any]:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    classes = [(a, f) for f in (2.0, 4.0) for a in (0.0, 0.25, 0.5, 0.75)][:k]
    y = rng.integers(0, len(classes), size=n)
    x = np.zeros((n, side, side), np.float32)
    for i in range(n):
        angle, freq = classes[y[i]]
        theta = np.pi * (angle + rng.normal(0, 0.04))
        f = freq * rng.uniform(0.85, 1.15)
        phase = rng.uniform(0, 2 * np.pi)
        x[i] = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(theta) + yy * np.sin(theta))
                                  + phase)
    return x, y


def images(d: Mapping[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Images ``(n, side, side)`` float32 in about [0, 1] plus ``noise`` Gaussian noise.

    Args:
        d: ``kind`` (one of :data:`IMAGE_KINDS`), ``side`` (pixels, >= 8),
            ``n_samples`` (shapes/textures; digits has 1797), ``n_classes`` (shapes 3-8,
            textures 3-8; digits 10), ``noise`` (pixel noise std, >= 0), ``flip_y``.
        rng: the run's generator.
    """
    kind, side = str(d["kind"]), int(d["side"])
    if kind == "digits":
        x, y = _upsampled_digits(side)
        k = 10
    elif kind == "shapes":
        k = min(len(SHAPES), int(d["n_classes"]))
        x, y = _shapes(int(d["n_samples"]), side, k, rng)
    else:
        k = min(8, int(d["n_classes"]))
        x, y = _textures(int(d["n_samples"]), side, k, rng)
    x = x + float(d["noise"]) * rng.normal(size=x.shape).astype(np.float32)
    return x.astype(np.float32), flip_labels(y, float(d.get("flip_y", 0.0)), k, rng), k


# ----------------------------------------------------------------------------- tables
def tabular(d: Mapping[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """make_classification rows with ``n_classes`` classes whose shares fall as
    ``(1 + i) ** -imbalance`` (0: balanced), one cluster per class.

    Args:
        d: ``n_samples``, ``n_features``, ``informative_fraction`` (0-1), ``n_classes``
            (>= 2), ``imbalance`` (>= 0), ``flip_y`` (0-1), ``class_sep`` (> 0).
        rng: the run's generator.
    """
    k, nf = int(d["n_classes"]), int(d["n_features"])
    weights = (1.0 + np.arange(k)) ** -float(d["imbalance"])
    weights = weights / weights.sum()
    n_inf = max(2, int(round(d["informative_fraction"] * nf)))
    while k > 2 ** n_inf:
        n_inf += 1
    x, y = require("sklearn.datasets", extra="collect").make_classification(
        n_samples=int(d["n_samples"]), n_features=nf, n_informative=min(n_inf, nf),
        n_redundant=0, n_classes=k, n_clusters_per_class=1, weights=list(weights),
        flip_y=float(d["flip_y"]), class_sep=float(d["class_sep"]),
        random_state=int(rng.integers(2 ** 31)))
    return x.astype(np.float32), y.astype(np.int64), k
