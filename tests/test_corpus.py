"""The committed real-curve corpus (models/corpus) loads and honours RUN_RECORD.md."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from earlystop_predict.records.corpus import load_corpus

CORPUS = Path(__file__).resolve().parents[1] / "models" / "corpus" / "runs.jsonl.gz"


@pytest.fixture(scope="module")
def records():
    if not CORPUS.exists():
        pytest.fail(f"{CORPUS} is missing: the corpus is part of the repository")
    return load_corpus(CORPUS)


def test_every_record_is_a_valid_run(records) -> None:
    assert len(records) >= 100
    ids = [r.run_id for r in records]
    assert len(set(ids)) == len(ids)
    for rec in records:
        assert rec.metric == "val_accuracy" and rec.mode == "max"
        acc = rec.series("val_accuracy")
        finite = acc[np.isfinite(acc)]
        assert ((finite >= 0) & (finite <= 1)).all()
        assert rec.meta["max_epochs"] >= rec.n_epochs >= 1
        assert {"optimizer", "learning_rate", "batch_size"} <= set(rec.hparams)


def test_corpus_spans_families_optimizers_and_schedules(records) -> None:
    families = Counter(r.extra["collect"]["family"] for r in records)
    optimizers = Counter(r.hparams["optimizer"] for r in records)
    schedules = Counter(r.hparams.get("lr_schedule") for r in records)
    from earlystop_predict.tools.collect.families import FAMILIES

    assert set(families) == set(FAMILIES) and min(families.values()) >= 5  # every family
    assert {"sgd", "adam", "adamw", "rmsprop"} <= set(optimizers)
    assert {"constant", "cosine", "step", "linear"} <= set(schedules)
    # Diverged runs are kept, marked, and stopped where they diverged.
    diverged = [r for r in records if r.extra["collect"]["status"] == "diverged"]
    assert all(r.stopped and r.stopped["reason"] == "diverged" for r in diverged)
