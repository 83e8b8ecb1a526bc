"""HFForecastCallback on real (tiny) Hugging Face ``Trainer.train()`` runs.

A 1-layer BERT built from a config (random weights, nothing downloaded), 64
rows of 8 tokens, CPU. A :class:`ScriptedForecaster` makes the stop epoch known.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from earlystop_predict.errors import ConfigError, MetricNotFoundError  # noqa: E402
from earlystop_predict.forecast.base import ScriptedForecaster  # noqa: E402
from earlystop_predict.integrations.transformers import HFForecastCallback  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.policy.stop import LOG_KEYS  # noqa: E402

torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[1]


class TinyDataset(torch.utils.data.Dataset):
    """``n`` random sequences of 8 tokens; label: first token above 50."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 100, (n, 8), generator=gen)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


class LogRecorder(TrainerCallback):
    """Collects what reaches the loggers (``on_log``), like a reporting integration."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        self.logs.append(dict(logs or {}))


class Crash(Exception):
    """Raised to kill a run right after a checkpoint (a pre-emption)."""


class CrashAfterSave(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            raise Crash(f"killed after the checkpoint of step {self.step}")


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=2))


def train_args(tmp_path: Path, **kw: Any) -> TrainingArguments:
    base: dict[str, Any] = dict(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], eval_strategy="epoch",
        save_strategy="no", num_train_epochs=8, per_device_train_batch_size=16,
        per_device_eval_batch_size=32, logging_strategy="epoch", disable_tqdm=True,
        dataloader_num_workers=0, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def make_trainer(tmp_path: Path, callbacks: list[Any], compute_metrics: Any = accuracy,
                 eval_dataset: Any = None, **kw: Any) -> Trainer:
    return Trainer(model=tiny_bert(), args=train_args(tmp_path, **kw),
                   train_dataset=TinyDataset(64, 0),
                   eval_dataset=eval_dataset if eval_dataset is not None else TinyDataset(32, 1),
                   compute_metrics=compute_metrics, callbacks=callbacks)


def constant(value: float) -> ScriptedForecaster:
    return ScriptedForecaster(lambda rec, target: value)


def eval_rows(trainer: Trainer, key: str = "eval_accuracy") -> list[dict[str, Any]]:
    return [e for e in trainer.state.log_history if key in e]


def esp_rows(trainer: Trainer) -> list[dict[str, Any]]:
    return [e for e in trainer.state.log_history if "esp/stop" in e]


# ----------------------------------------------------------------------------- stopping
def test_stops_at_min_epochs_logs_and_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "l.db"
    cb = HFForecastCallback(threshold=0.9, min_epochs=3, model=constant(0.2), ledger=ledger,
                            study="tiny", task="tiny-bert", run_id="bert-1")
    rec = LogRecorder()
    trainer = make_trainer(tmp_path, [rec, cb])
    trainer.train()

    assert trainer.state.epoch == pytest.approx(3.0)
    assert len(eval_rows(trainer)) == 3
    assert cb.stopped == {"epoch": 3, "reason": "forecast q0.95 0.2 < threshold 0.9"}
    rows = esp_rows(trainer)
    assert [r["esp/index"] for r in rows] == [1, 2, 3]
    assert [r["esp/stop"] for r in rows] == [0.0, 0.0, 1.0]
    for r, step in zip(rows, (4, 8, 12), strict=True):
        assert set(LOG_KEYS) <= set(r) and r["step"] == step
        assert r["esp/forecast_mean"] == pytest.approx(0.2)
    # The values reach the loggers as their own on_log event.
    logged = [log for log in rec.logs if "esp/stop" in log]
    assert [log["esp/stop"] for log in logged] == [0.0, 0.0, 1.0]
    assert all(set(LOG_KEYS) <= set(log) for log in logged)

    # The record: rows with eval metrics and the train loss; hparams read from the Trainer.
    record = cb.record
    assert [r["epoch"] for r in record.epochs] == [1, 2, 3]
    assert all({"val_accuracy", "val_loss", "train_loss"} <= set(r) for r in record.epochs)
    assert not any(k.endswith("_runtime") for r in record.epochs for k in r)
    hp, meta = record.hparams, record.meta
    assert hp["batch_size"] == 16 and hp["optimizer"] == "adamw"
    assert hp["learning_rate"] == pytest.approx(5e-5) and hp["momentum"] == pytest.approx(0.9)
    assert hp["lr_schedule"] == "linear" and hp["num_layers"] == 1 and hp["width"] == 16
    assert hp["dropout"] == pytest.approx(0.1)
    assert meta["train_size"] == 64 and meta["num_classes"] == 2 and meta["max_epochs"] == 8
    assert meta["num_params"] == sum(p.numel() for p in trainer.model.parameters())
    assert record.forecasts[-1]["target_epoch"] == 8

    with Ledger(ledger) as led:
        (stored,) = led.records(study="tiny")
        (run,) = led.runs(study="tiny")
    assert stored.run_id == "bert-1" and stored.task == "tiny-bert"
    assert [r["epoch"] for r in stored.epochs] == [1, 2, 3]
    assert [f["at_epoch"] for f in stored.forecasts] == [1, 2, 3]
    assert [f["mean"] for f in stored.forecasts] == pytest.approx([0.2, 0.2, 0.2])
    assert stored.stopped == cb.stopped
    assert run["status"] == "stopped" and run["final_epoch"] == 3


def test_dry_run_trains_to_the_end(tmp_path: Path) -> None:
    ledger = tmp_path / "l.db"
    cb = HFForecastCallback(threshold=0.9, min_epochs=3, model=constant(0.2), ledger=ledger,
                            dry_run=True, run_id="dry")
    trainer = make_trainer(tmp_path, [cb])
    trainer.train()

    assert trainer.state.epoch == pytest.approx(8.0)
    assert len(eval_rows(trainer)) == 8
    assert cb.stopped is None
    assert all(r["esp/stop"] == 0.0 for r in esp_rows(trainer))
    forecasts = cb.record.forecasts
    assert [f["at_epoch"] for f in forecasts] == list(range(1, 9))
    assert all(f.get("would_stop") for f in forecasts[2:7])  # epochs 3..7 would have stopped
    assert "no forecast" in forecasts[-1]["reason"]  # epoch 8 is the target itself
    # ... and its logged forecast is the observation, never NaN.
    assert esp_rows(trainer)[-1]["esp/forecast_q10"] == pytest.approx(
        eval_rows(trainer)[-1]["eval_accuracy"])
    with Ledger(ledger) as led:
        (stored,) = led.records()
        (run,) = led.runs()
    assert len(stored.epochs) == 8 and len(stored.forecasts) == 8
    assert run["status"] == "completed" and stored.stopped is None


def test_steps_mode_counts_evaluations(tmp_path: Path) -> None:
    # 64 rows / 16 = 4 steps per epoch, 2 epochs = 8 steps, an evaluation every 2 steps.
    cb = HFForecastCallback("accuracy", threshold=0.9, min_epochs=2, model=constant(0.2))
    trainer = make_trainer(tmp_path, [cb], num_train_epochs=2, eval_strategy="steps",
                           eval_steps=2, logging_strategy="steps", logging_steps=2)
    trainer.train()

    assert trainer.state.global_step == 4  # stopped at the 2nd evaluation
    assert [r["esp/index"] for r in esp_rows(trainer)] == [1, 2]
    assert [r["step"] for r in esp_rows(trainer)] == [2, 4]
    assert cb.stopped is not None and cb.stopped["epoch"] == 2
    assert [r["epoch"] for r in cb.record.epochs] == [1, 2]
    assert all("train_loss" in r for r in cb.record.epochs)
    assert cb.record.forecasts[0]["target_epoch"] == 4  # max_steps // eval_steps
    assert cb.record.meta["max_epochs"] == 4


def test_nan_metric_stops_as_diverged(tmp_path: Path) -> None:
    calls = {"n": 0}

    def metrics_then_nan(pred: Any) -> dict[str, float]:
        calls["n"] += 1
        return {"accuracy": math.nan} if calls["n"] == 2 else accuracy(pred)

    cb = HFForecastCallback(threshold=0.9, min_epochs=3, model=constant(0.95))
    trainer = make_trainer(tmp_path, [cb], compute_metrics=metrics_then_nan)
    trainer.train()

    assert trainer.state.epoch == pytest.approx(2.0)
    assert cb.stopped == {"epoch": 2, "reason": "diverged"}
    assert cb.record.epochs[-1]["val_accuracy"] is None
    assert esp_rows(trainer)[-1]["esp/stop"] == 1.0


def test_missing_monitor_lists_eval_keys(tmp_path: Path) -> None:
    cb = HFForecastCallback("f1", threshold=0.9, model=constant(0.95))
    trainer = make_trainer(tmp_path, [cb])
    with pytest.raises(MetricNotFoundError) as info:
        trainer.train()
    err = info.value
    assert err.metric == "eval_f1"
    assert {"eval_accuracy", "eval_loss"} <= set(err.available)
    assert "epoch" not in err.available
    assert "eval_accuracy" in str(err)


def test_several_eval_datasets(tmp_path: Path) -> None:
    evals = {"a": TinyDataset(16, 1), "b": TinyDataset(16, 2)}
    cb = HFForecastCallback("eval_b_accuracy", threshold=0.9, min_epochs=2,
                            model=constant(0.2))
    trainer = make_trainer(tmp_path, [cb], eval_dataset=evals)
    trainer.train()
    assert trainer.state.epoch == pytest.approx(2.0)
    assert [r["epoch"] for r in cb.record.epochs] == [1, 2]
    assert "eval_a_accuracy" not in cb.record.epochs[0]

    wrong = HFForecastCallback("eval_c_accuracy", threshold=0.9, model=constant(0.2))
    trainer = make_trainer(tmp_path, [wrong], eval_dataset=evals)
    with pytest.raises(MetricNotFoundError) as info:
        trainer.train()
    assert "eval_b_accuracy" in info.value.available


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("restore_states", [False, True], ids=["log_history", "exportable"])
def test_resume_continues_the_record(tmp_path: Path, restore_states: bool) -> None:
    ledger = tmp_path / "l.db"

    def late_stop() -> ScriptedForecaster:  # poor from epoch 5 on
        return ScriptedForecaster(lambda rec, t: 0.2 if rec.last_epoch >= 5 else 0.95)

    def callback() -> HFForecastCallback:
        return HFForecastCallback(threshold=0.9, min_epochs=3, model=late_stop(),
                                  ledger=ledger, study="resume")

    kw = dict(save_strategy="epoch", restore_callback_states_from_checkpoint=restore_states)
    first = callback()
    trainer = make_trainer(tmp_path, [first, CrashAfterSave(step=12)], **kw)
    with pytest.raises(Crash):
        trainer.train()
    assert [r["epoch"] for r in first.record.epochs] == [1, 2, 3]
    checkpoint = tmp_path / "out" / "checkpoint-12"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["HFForecastCallback"]["attributes"]["restored_state"]

    second = callback()  # a new process would build it again, with the same arguments
    trainer = make_trainer(tmp_path, [second], **kw)
    trainer.train(resume_from_checkpoint=str(checkpoint))

    assert trainer.state.epoch == pytest.approx(5.0)
    record = second.record
    assert record.run_id == first.record.run_id
    assert [r["epoch"] for r in record.epochs] == [1, 2, 3, 4, 5]
    assert [f["at_epoch"] for f in record.forecasts] == [1, 2, 3, 4, 5]
    # Both ways resume from the progress saved in the checkpoint's TrainerState: rows
    # keep their time (nothing is rebuilt from log_history).
    assert "time" in record.epochs[0]
    assert second.stopped is not None and second.stopped["epoch"] == 5
    assert [r["esp/index"] for r in esp_rows(trainer)] == [1, 2, 3, 4, 5]
    with Ledger(ledger) as led:
        (stored,) = led.records(study="resume")
        (run,) = led.runs(study="resume")
    assert stored.run_id == record.run_id
    assert [r["epoch"] for r in stored.epochs] == [1, 2, 3, 4, 5]
    assert [f["at_epoch"] for f in stored.forecasts] == [1, 2, 3, 4, 5]
    assert run["status"] == "stopped"


def test_state_round_trip_without_trainer() -> None:
    cb = HFForecastCallback("eval_loss", threshold=0.5, model=constant(0.2), target_epoch=10)
    state = cb.state()
    json.dumps(state)  # what the Trainer writes to trainer_state.json
    assert state["args"]["monitor"] == "eval_loss" and "model" not in state["args"]
    assert cb.monitor.mode == "min"
    # HF rebuilds ``type(cb)(**args)``: the live callback comes back, arguments intact.
    again = HFForecastCallback(**state["args"])
    assert again is cb and again.monitor.policy.threshold == 0.5


# ----------------------------------------------------------------------------- ranks
_DDP_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_transformers import TinyDataset, accuracy, tiny_bert
from transformers import Trainer, TrainingArguments
from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.integrations.transformers import HFForecastCallback

out = {out!r}
rank = int(os.environ["RANK"])
# Only rank 0 forecasts a poor run: every rank must still stop with it.
fc = ScriptedForecaster(lambda r, t: 0.2 if rank == 0 and r.last_epoch >= 3 else 0.95)
cb = HFForecastCallback(threshold=0.9, min_epochs=2, model=fc, run_id="ddp",
                        ledger=os.path.join(out, "l.db"))
args = TrainingArguments(output_dir=os.path.join(out, "run"), use_cpu=True, report_to=[],
                         eval_strategy="epoch", save_strategy="no", num_train_epochs=6,
                         per_device_train_batch_size=8, logging_strategy="epoch",
                         disable_tqdm=True, ddp_backend="gloo")
trainer = Trainer(model=tiny_bert(), args=args, train_dataset=TinyDataset(64, 0),
                  eval_dataset=TinyDataset(32, 1), compute_metrics=accuracy, callbacks=[cb])
trainer.train()
with open(os.path.join(out, f"rank{{rank}}.json"), "w") as fh:
    json.dump({{"epoch": trainer.state.epoch, "world": args.world_size, "stopped": cb.stopped,
               "rows": [r["epoch"] for r in cb.record.epochs]}}, fh)
"""


def test_two_ranks_stop_together(tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT.format(
        tests=str(Path(__file__).parent), out=str(tmp_path))))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script)]
    # Own process group, so that a hang kills the launcher and both workers.
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-4000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in results)
    assert [r["epoch"] for r in results] == [pytest.approx(3.0)] * 2
    assert results[0]["rows"] == results[1]["rows"] == [1, 2, 3]
    assert results[0]["stopped"]["epoch"] == results[1]["stopped"]["epoch"] == 3
    assert results[1]["stopped"]["reason"].startswith("rank 0: forecast q0.95 0.2")
    with Ledger(tmp_path / "l.db") as led:
        (stored,) = led.records()  # rank 0 alone wrote it
    assert [r["epoch"] for r in stored.epochs] == [1, 2, 3]


def test_optimizer_passed_to_the_trainer_wins_over_the_arguments(tmp_path: Path) -> None:
    model = tiny_bert()
    sgd = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.7, weight_decay=1e-3)
    cb = HFForecastCallback("eval_accuracy", threshold=0.9, min_epochs=3, model=constant(0.2))
    Trainer(model=model, args=train_args(tmp_path, num_train_epochs=3),
            train_dataset=TinyDataset(64, 0), eval_dataset=TinyDataset(32, 1),
            compute_metrics=accuracy, callbacks=[cb], optimizers=(sgd, None)).train()
    hp = cb.monitor.record.hparams
    assert hp["optimizer"] == "sgd"
    assert hp["learning_rate"] == pytest.approx(0.03) and hp["momentum"] == pytest.approx(0.7)
    assert hp["weight_decay"] == pytest.approx(1e-3)


# ----------------------------------------------------------------------------- best weights
def test_restore_best_weights_is_the_trainers_load_best_model_at_end(tmp_path: Path) -> None:
    scores = iter([0.5, 0.7, 0.6, 0.55, 0.5, 0.5, 0.5, 0.5])    # best at epoch 2

    def scripted(pred: Any) -> dict[str, float]:
        return {"accuracy": next(scores)}

    def callback(**kw: Any) -> HFForecastCallback:
        return HFForecastCallback(threshold=0.9, min_epochs=3, restore_best_weights=True,
                                  model=ScriptedForecaster(lambda r, t: 0.95 if r.last_epoch < 3
                                                           else 0.2), min_delta=0.01, **kw)

    with pytest.raises(ConfigError, match="load_best_model_at_end"):
        make_trainer(tmp_path, [callback()]).train()
    cb = callback(ledger=tmp_path / "l.db")
    assert cb.monitor.policy.min_delta == 0.01
    trainer = make_trainer(tmp_path, [cb], compute_metrics=scripted, save_strategy="epoch",
                           load_best_model_at_end=True, metric_for_best_model="accuracy")
    trainer.train()
    assert cb.stopped["epoch"] == 3
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-8")   # epoch 2 of 4 steps
    assert cb.stopped["reason"].endswith("restored the weights of epoch 2")
    with Ledger(tmp_path / "l.db") as led:
        (run,) = led.runs()
    assert "restored the weights of epoch 2" in run["stopped"]["reason"]


def test_a_different_metric_for_best_model_warns_once(tmp_path: Path) -> None:
    cb = HFForecastCallback(threshold=0.9, min_epochs=2, model=constant(0.2))
    trainer = make_trainer(tmp_path, [cb], save_strategy="epoch", load_best_model_at_end=True,
                           metric_for_best_model="loss", num_train_epochs=2)
    with pytest.warns(UserWarning, match="metric_for_best_model='loss'") as caught:
        trainer.train()
        trainer.train()
    assert sum("metric_for_best_model" in str(w.message) for w in caught) == 1
