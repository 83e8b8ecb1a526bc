"""Real run records (the collected corpus, a user's ledger or JSONL) as training curves.

LCBench curves are smooth and get a time warp and synthetic noise
(:mod:`.data`). Real runs need neither: their schedules, optimizers and noise are
the real thing. They are used as recorded, padded to :data:`.data.MAX_HORIZON`
epochs; a run that diverged or was stopped early gives samples only where its
target epoch was observed. Augmentation here is what a user's records vary in:
hyperparameters and meta missing at random, and runs that log no validation loss
or no training metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earlystop_predict.errors import ConfigError
from earlystop_predict.records.features import STATIC_DIM, canonical_metric, record_static
from earlystop_predict.records.record import RunRecord, read_records
from earlystop_predict.training.data import MAX_HORIZON, CurveBatch, mask_static

COLUMNS = ("val_loss", "train_accuracy", "train_loss")


def family_of(record: RunRecord) -> str:
    """The family a corpus run belongs to (``collect.family``), else its task, else ``""``."""
    collect = record.extra.get("collect")
    if isinstance(collect, dict) and collect.get("family"):
        return str(collect["family"])
    return str(record.task or "")


def read_runs(path: str | os.PathLike[str], option: str = "--from") -> list[RunRecord]:
    """Run records from a ledger (``.db``), a corpus (``.jsonl.gz``) or JSONL.

    Raises:
        ConfigError: no such file.
        RecordError: a record breaks RUN_RECORD.md (names the line and field).
    """
    p = Path(path)
    if p.is_dir() and (p / "runs.jsonl.gz").exists():
        p = p / "runs.jsonl.gz"
    if not p.is_file():
        raise ConfigError(option, "a ledger (.db), a corpus (.jsonl.gz) or a JSONL file",
                          str(path))
    with open(p, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"SQLite format 3"):
        from earlystop_predict.ledger import Ledger

        with Ledger(p, readonly=True) as led:
            return led.records()
    if head[:2] == b"\x1f\x8b":
        from earlystop_predict.records.corpus import load_corpus

        return load_corpus(p)
    return read_records(p)


def usable(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Records an accuracy forecaster can learn from: accuracy-like target, >= 2 epochs."""
    out = []
    for r in records:
        if r.mode != "max" or canonical_metric(r.metric) not in ("val_accuracy",
                                                                   "val_balanced_accuracy"):
            continue
        if r.n_epochs >= 2 and r.last_epoch <= MAX_HORIZON and r.has_finite(r.metric):
            out.append(r)
    return out


@dataclass(frozen=True)
class RealCurves:
    """Real runs as padded arrays (NaN where an epoch or a metric is absent).

    Attributes:
        acc: (N, MAX_HORIZON) the target metric by epoch number.
        val_loss, train_acc, train_loss: (N, MAX_HORIZON) the other curves.
        horizon: (N,) planned epochs (``meta.max_epochs``, else the last epoch).
        length: (N,) last recorded epoch.
        static: (N, STATIC_DIM) encoded hparams and meta.
        group: (N,) family (or task) of each run.
    """

    acc: np.ndarray
    val_loss: np.ndarray
    train_acc: np.ndarray
    train_loss: np.ndarray
    horizon: np.ndarray
    length: np.ndarray
    static: np.ndarray
    group: np.ndarray

    @classmethod
    def from_records(cls, records: Sequence[RunRecord]) -> RealCurves:
        """Arrays of ``records`` (see :func:`usable` for which ones qualify)."""
        n = len(records)
        arrays = {k: np.full((n, MAX_HORIZON), np.nan) for k in ("acc",) + COLUMNS}
        horizon = np.empty(n, dtype=np.int64)
        length = np.empty(n, dtype=np.int64)
        static = np.empty((n, STATIC_DIM), dtype=np.float32)
        for i, r in enumerate(records):
            m = r.matrix(("epoch", r.metric) + COLUMNS)
            ep = m[:, 0].astype(np.int64) - 1
            ok = (ep >= 0) & (ep < MAX_HORIZON)
            for j, k in enumerate(("acc",) + COLUMNS):
                arrays[k][i, ep[ok]] = m[ok, j + 1]
            length[i] = min(r.last_epoch, MAX_HORIZON)
            try:
                planned = int(float(r.meta.get("max_epochs") or 0))
            except (TypeError, ValueError):
                planned = 0
            horizon[i] = min(max(planned, length[i]), MAX_HORIZON)
            static[i] = record_static(r)
        return cls(acc=arrays["acc"], val_loss=arrays["val_loss"],
                   train_acc=arrays["train_accuracy"], train_loss=arrays["train_loss"],
                   horizon=horizon, length=length, static=static,
                   group=np.array([family_of(r) for r in records], dtype=object))

    def __len__(self) -> int:
        return len(self.horizon)

    def sample(self, rows: np.ndarray, rng: np.random.Generator, *,
               augment: bool = True) -> CurveBatch:
        """A batch of ``rows`` as recorded; ``augment`` masks inputs at random."""
        target = self.acc[rows].copy()
        vloss = self.val_loss[rows].copy()
        tacc = self.train_acc[rows].copy()
        tloss = self.train_loss[rows].copy()
        st = self.static[rows].copy()
        if augment:
            b = len(rows)
            vloss[rng.random(b) < 0.2] = np.nan
            no_train = rng.random(b) < 0.2
            tacc[no_train] = np.nan
            tloss[no_train] = np.nan
            st = mask_static(st, rng, horizon_too=True)
        return CurveBatch(target=target, clean=self.acc[rows], val_loss=vloss,
                          horizon=self.horizon[rows], static=st,
                          clean_loss=self.val_loss[rows], train_acc=tacc, train_loss=tloss,
                          length=self.length[rows])
