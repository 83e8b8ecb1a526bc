"""The shared LCBench surrogate corpus as arrays and run records.

The corpus lives outside the repository (``../shared/data/lcbench_surrogate``,
see its README); it is read from there, never copied. Set
``EARLYSTOP_PREDICT_LCBENCH`` to point elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from earlystop_predict.errors import ConfigError
from earlystop_predict.records.record import RunRecord

MAX_EPOCHS = 52
HPARAM_NAMES = ("learning_rate", "batch_size", "momentum", "weight_decay", "num_layers",
                "width", "dropout")
_INT_HPARAMS = {"batch_size", "num_layers", "width"}


def default_path() -> Path:
    """Where the corpus is looked for: ``$EARLYSTOP_PREDICT_LCBENCH`` or ``../shared``."""
    env = os.environ.get("EARLYSTOP_PREDICT_LCBENCH")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data" / "lcbench_surrogate" / "train.npz"
        if cand.exists():
            return cand
    return Path.cwd().parent / "shared" / "data" / "lcbench_surrogate" / "train.npz"


@dataclass(frozen=True)
class LCBench:
    """The corpus as arrays.

    Attributes:
        task_id: (N,) OpenML task id per row.
        hparams: (N, 7) raw values, columns ``HPARAM_NAMES``.
        acc: (N, 52) validation accuracy (fraction).
        loss: (N, 52) validation cross-entropy.
    """

    task_id: np.ndarray
    hparams: np.ndarray
    acc: np.ndarray
    loss: np.ndarray

    @property
    def tasks(self) -> list[int]:
        """Task ids in file order."""
        _, idx = np.unique(self.task_id, return_index=True)
        return [int(self.task_id[i]) for i in sorted(idx)]

    def subset(self, tasks: Iterable[int]) -> LCBench:
        """Rows of the given tasks only."""
        keep = np.isin(self.task_id, np.asarray(list(tasks)))
        return LCBench(self.task_id[keep], self.hparams[keep], self.acc[keep], self.loss[keep])

    def hparam_dict(self, i: int) -> dict[str, object]:
        """Canonical hparams of row ``i`` (LCBench is SGD + cosine)."""
        hp: dict[str, object] = {}
        for name, v in zip(HPARAM_NAMES, self.hparams[i], strict=False):
            hp[name] = int(round(v)) if name in _INT_HPARAMS else float(v)
        hp.update(optimizer="sgd", lr_schedule="cosine")
        return hp

    def record(self, i: int, n_epochs: int = MAX_EPOCHS) -> RunRecord:
        """Row ``i`` as a run record holding its first ``n_epochs`` epochs."""
        epochs = [{"epoch": e + 1, "val_accuracy": float(self.acc[i, e]),
                   "val_loss": float(self.loss[i, e])} for e in range(n_epochs)]
        return RunRecord(run_id=f"lcbench-{int(self.task_id[i])}-{i}",
                         task=f"openml-{int(self.task_id[i])}", metric="val_accuracy",
                         mode="max", hparams=self.hparam_dict(i),
                         meta={"max_epochs": MAX_EPOCHS, "framework": "torch"},
                         epochs=epochs)


@lru_cache(maxsize=2)
def load_lcbench(path: str | None = None) -> LCBench:
    """Load the corpus (no pickle). Raises ConfigError naming the path if it is absent."""
    p = Path(path) if path else default_path()
    if not p.exists():
        raise ConfigError("lcbench path", "an existing train.npz (see shared/data README)",
                          str(p))
    with np.load(p, allow_pickle=False) as z:
        names = [str(n) for n in z["metric_names"]]
        curves = z["curves"]
        return LCBench(task_id=z["task_id"].astype(np.int64),
                       hparams=z["hparams"].astype(np.float64),
                       acc=curves[:, :, names.index("val_accuracy")].astype(np.float32),
                       loss=curves[:, :, names.index("val_loss")].astype(np.float32))


def lcbench_records(tasks: Iterable[int] | None = None, path: str | None = None,
                    limit_per_task: int | None = None) -> list[RunRecord]:
    """The corpus (optionally some tasks, some rows per task) as full run records."""
    data = load_lcbench(path)
    if tasks is not None:
        data = data.subset(tasks)
    rows = range(len(data.task_id))
    if limit_per_task is not None:
        counts: dict[int, int] = {}
        keep = []
        for i in rows:
            t = int(data.task_id[i])
            if counts.get(t, 0) < limit_per_task:
                counts[t] = counts.get(t, 0) + 1
                keep.append(i)
        rows = keep  # type: ignore[assignment]
    return [data.record(i) for i in rows]


# The split by task (never by run) used to train and evaluate the bundled models:
# a seeded permutation of the 26 tasks (numpy default_rng(2026)): 6 held out for the
# benchmarks, 3 for early stopping and interval calibration, the rest for training.
TEST_TASKS: tuple[int, ...] = (126029, 167184, 167201, 189862, 189865, 189873)
VAL_TASKS: tuple[int, ...] = (7593, 168908, 189906)


def train_tasks(data: LCBench) -> list[int]:
    """The tasks that are neither held out nor used for validation."""
    return [t for t in data.tasks if t not in TEST_TASKS and t not in VAL_TASKS]
