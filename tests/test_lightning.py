"""LightningForecastCallback on real (tiny) Lightning training on CPU.

A scripted forecaster makes the stop epoch known: it forecasts 0.95 until the
run holds 3 epochs, then 0.2; with ``threshold=0.9`` and ``min_epochs=3`` the
run stops at epoch 3.
"""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from conftest import by_epoch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from earlystop_predict.errors import MetricNotFoundError  # noqa: E402
from earlystop_predict.forecast.base import ScriptedForecaster  # noqa: E402
from earlystop_predict.integrations.lightning import LightningForecastCallback  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.policy.stop import LOG_KEYS  # noqa: E402

EPOCHS = 6
torch.set_num_threads(1)
pytestmark = [pytest.mark.filterwarnings("ignore:.*does not have many workers"),
              pytest.mark.filterwarnings("ignore:.*treespec, LeafSpec"),
              pytest.mark.filterwarnings("ignore:.*the logging interval"),
              pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists")]


def scripted():
    """0.95 for epochs 1-2, 0.2 from epoch 3 on."""
    return by_epoch({1: 0.95, 2: 0.95}, default=0.2)


class TinyModule(pl.LightningModule):
    """Linear(8, 16) -> ReLU -> Dropout -> Linear(16, 3); logs train_loss, val_loss, val_acc."""

    def __init__(self, optimizer: str = "adam", lr: float = 0.01, schedule: bool = False):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                       torch.nn.Dropout(0.25), torch.nn.Linear(16, 3))
        self.optimizer, self.lr, self.schedule = optimizer, lr, schedule

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        if self.optimizer == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=self.lr, betas=(0.8, 0.999))
        else:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9,
                                  weight_decay=1e-4)
        if not self.schedule:
            return opt
        return {"optimizer": opt,
                "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)}


def loaders(nan: bool = False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    if nan:
        x[:, 0] = float("nan")
    return (DataLoader(TensorDataset(x, y), batch_size=16),
            DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32))


def trainer(cb, *, max_epochs: int = EPOCHS, extra=(), **kwargs) -> pl.Trainer:
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("log_every_n_steps", 1)
    kwargs.setdefault("devices", 1)
    return pl.Trainer(accelerator="cpu", max_epochs=max_epochs,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[cb, *extra], **kwargs)


def fit(cb, *, module=None, nan: bool = False, ckpt_path=None, **kwargs) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    tr = trainer(cb, **kwargs)
    tr.fit(module or TinyModule(), *loaders(nan), ckpt_path=ckpt_path)
    return tr


def make(tmp_path=None, **kwargs) -> LightningForecastCallback:
    kwargs.setdefault("threshold", 0.9)
    kwargs.setdefault("min_epochs", 3)
    kwargs.setdefault("model", scripted())
    if tmp_path is not None:
        kwargs.setdefault("ledger", tmp_path / "l.db")
    return LightningForecastCallback("val_acc", **kwargs)


def test_stops_at_scripted_epoch_and_logs_everywhere(tmp_path):
    cb = make(tmp_path, run_id="pl1", study="unit")
    logger = pl.loggers.CSVLogger(tmp_path, name="csv", version=0)
    tr = fit(cb, logger=logger)

    assert tr.current_epoch == 3                             # epochs 1-3 ran, of 6
    assert cb.monitor.stopped == {"epoch": 3,
                                  "reason": "forecast q0.95 0.2 < threshold 0.9"}
    assert set(LOG_KEYS) <= set(tr.logged_metrics)
    assert float(tr.logged_metrics["esp/forecast_mean"]) == pytest.approx(0.2)
    assert float(tr.logged_metrics["esp/stop"]) == 1.0

    with open(tmp_path / "csv" / "version_0" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("esp/stop")]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["esp/forecast_mean"]) for r in rows] == pytest.approx([0.95, 0.95, 0.2])
    assert [float(r["esp/stop"]) for r in rows] == [0.0, 0.0, 1.0]

    (rec,) = Ledger(tmp_path / "l.db").records(study="unit")
    assert rec.run_id == "pl1"
    assert [r["epoch"] for r in rec.epochs] == [1, 2, 3]
    assert {"val_accuracy", "val_loss", "train_loss"} <= set(rec.epochs[0])
    assert [f["mean"] for f in rec.forecasts] == pytest.approx([0.95, 0.95, 0.2])
    assert [f["stop"] for f in rec.forecasts] == [False, False, True]
    assert rec.forecasts[0]["target_epoch"] == EPOCHS     # default: trainer.max_epochs
    assert rec.stopped["epoch"] == 3
    assert rec.extra["status"] == "stopped"


def test_dry_run_trains_to_the_end_with_the_same_forecasts(tmp_path):
    cb = make(tmp_path, dry_run=True)
    tr = fit(cb)

    assert tr.current_epoch == EPOCHS
    assert cb.monitor.stopped is None
    (rec,) = Ledger(tmp_path / "l.db").records()
    assert [r["epoch"] for r in rec.epochs] == list(range(1, EPOCHS + 1))
    assert [f.get("mean") for f in rec.forecasts[:5]] == pytest.approx([0.95, 0.95, 0.2,
                                                                        0.2, 0.2])
    assert [f["stop"] for f in rec.forecasts] == [False] * EPOCHS
    assert rec.forecasts[2]["would_stop"] is True
    assert rec.extra["status"] == "completed"
    # At the target epoch the logged forecast is the observation, never NaN.
    assert float(tr.callback_metrics["esp/forecast_mean"]) == pytest.approx(
        rec.epochs[-1]["val_accuracy"])


def test_nan_loss_stops_as_diverged():
    cb = make(model=by_epoch({}, default=0.99))
    tr = fit(cb, nan=True)

    assert tr.current_epoch == 1
    assert math.isnan(float(tr.callback_metrics["train_loss"]))
    assert cb.monitor.stopped == {"epoch": 1, "reason": "diverged"}
    assert float(tr.logged_metrics["esp/stop"]) == 1.0


def test_missing_metric_lists_the_logged_keys(tmp_path):
    cb = LightningForecastCallback("val_f1", model=scripted(), ledger=tmp_path / "l.db")
    with pytest.raises(MetricNotFoundError) as info:
        fit(cb)
    assert info.value.metric == "val_f1"
    assert info.value.available == ["train_loss", "val_acc", "val_loss"]
    assert "available keys: train_loss, val_acc, val_loss" in str(info.value)
    (run,) = Ledger(tmp_path / "l.db").runs()
    assert run["status"] == "failed"


def test_hyperparameters_read_from_lightning_user_values_win():
    cb = make(model=by_epoch({}, default=0.99), hparams={"width": 99}, meta={"task_x": 1})
    module = TinyModule("adam", lr=0.01)
    fit(cb, module=module)

    hp, meta = cb.monitor.record.hparams, cb.monitor.record.meta
    assert hp["optimizer"] == "adam"
    assert hp["learning_rate"] == pytest.approx(0.01)
    assert hp["momentum"] == pytest.approx(0.8)               # betas[0]
    assert hp["lr_schedule"] == "constant"
    assert hp["batch_size"] == 16
    assert hp["dropout"] == pytest.approx(0.25)
    assert hp["num_layers"] == 1 and hp["width"] == 99         # the user's width
    assert meta["num_params"] == sum(p.numel() for p in module.parameters()) == 195
    assert meta["max_epochs"] == EPOCHS
    assert meta["train_size"] == 64
    assert (meta["num_features"], meta["num_classes"]) == (8, 3)
    assert meta["framework"] == "lightning" and meta["task_x"] == 1


def test_scheduler_and_sgd_are_read():
    cb = make(model=by_epoch({}, default=0.99))
    fit(cb, module=TinyModule("sgd", lr=0.1, schedule=True))

    hp = cb.monitor.record.hparams
    assert hp["optimizer"] == "sgd"
    assert hp["learning_rate"] == pytest.approx(0.1)           # initial, not the decayed
    assert hp["lr_schedule"] == "cosine"
    assert hp["momentum"] == pytest.approx(0.9)
    assert hp["weight_decay"] == pytest.approx(1e-4)


def test_one_instance_two_fits_start_fresh(tmp_path):
    cb = make(tmp_path)
    fit(cb)
    first = cb.monitor.record
    tr = fit(cb, max_epochs=4)

    second = cb.monitor.record
    assert second.run_id != first.run_id
    assert tr.current_epoch == 3
    assert [r["epoch"] for r in second.epochs] == [1, 2, 3]
    assert [f["target_epoch"] for f in second.forecasts] == [4, 4, 4]
    runs = Ledger(tmp_path / "l.db").runs()
    assert sorted(r["run_id"] for r in runs) == sorted([first.run_id, second.run_id])


def test_resume_from_checkpoint_restores_progress(tmp_path):
    # Forecasts stay good for epochs 1-4, then poor: the resumed run stops at 5.
    kwargs = dict(model=by_epoch({5: 0.2, 6: 0.2}, default=0.99), target_epoch=EPOCHS)
    def ckpt():
        return pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)

    cb = make(tmp_path, **kwargs)
    fit(cb, max_epochs=3, extra=[ckpt()], enable_checkpointing=True)
    run_id = cb.monitor.record.run_id
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    state = saved["LightningForecastCallback{'monitor': 'val_acc', 'target_epoch': 6}"]
    assert [r["epoch"] for r in state["record"]["epochs"]] == [1, 2, 3]

    resumed = make(tmp_path, **kwargs)                        # a new process, say
    tr = fit(resumed, ckpt_path=tmp_path / "ckpt" / "last.ckpt", extra=[ckpt()],
             enable_checkpointing=True)
    rec = resumed.monitor.record
    assert rec.run_id == run_id
    assert tr.current_epoch == 5
    assert [r["epoch"] for r in rec.epochs] == [1, 2, 3, 4, 5]
    assert resumed.monitor.stopped["epoch"] == 5
    (stored,) = Ledger(tmp_path / "l.db").records()
    assert [r["epoch"] for r in stored.epochs] == [1, 2, 3, 4, 5]
    assert stored.extra["status"] == "stopped"


def test_bundled_model_forecasts_every_epoch():
    cb = LightningForecastCallback("val_acc", threshold=0.9, dry_run=True)  # model="auto"
    fit(cb)

    fcs = cb.monitor.record.forecasts
    assert [f["at_epoch"] for f in fcs] == list(range(1, EPOCHS + 1))
    for f in fcs[:-1]:                                       # the last epoch is the target
        assert f["model"] in ("lstm+lightgbm", "lightgbm") and f["target_epoch"] == EPOCHS
        q = f["quantiles"]
        assert 0.0 <= q["0.1"] <= q["0.5"] <= q["0.9"] <= 1.0


# ----------------------------------------------------------------------------- DDP
def rank_zero_says_stop(rec, target_epoch):
    """Poor from epoch 3 on rank 0 only: any other rank's forecast would never stop."""
    dist = torch.distributed
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return 0.2 if rank == 0 and rec.last_epoch >= 3 else 0.95


class WhereEachRankStopped(pl.Callback):
    """Writes ``{rank, epoch, records}`` of its process to ``<dir>/rank<k>.json``."""

    def __init__(self, directory):
        self.directory = str(directory)

    def on_train_end(self, trainer, pl_module):
        fc = next(c for c in trainer.callbacks if isinstance(c, LightningForecastCallback))
        out = {"rank": trainer.global_rank, "epoch": trainer.current_epoch,
               "epochs_recorded": len(fc.monitor.record.epochs)}
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as fh:
            json.dump(out, fh)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
@pytest.mark.skipif(os.environ.get("ESP_SKIP_DDP") == "1",
                    reason="ESP_SKIP_DDP=1: the 2-process test takes 25-40 s on 2 cores")
def test_ddp_ranks_stop_together_on_rank_zero_decision(tmp_path):
    cb = LightningForecastCallback("val_acc", threshold=0.9, min_epochs=3,
                                   model=ScriptedForecaster(rank_zero_says_stop),
                                   ledger=tmp_path / "l.db", run_id="ddp")
    fit(cb, strategy="ddp_spawn", devices=2, extra=[WhereEachRankStopped(tmp_path)])

    got = sorted((json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")),
                 key=lambda d: d["rank"])
    assert [d["rank"] for d in got] == [0, 1]
    assert [d["epoch"] for d in got] == [3, 3]                 # both stopped after epoch 3
    assert [d["epochs_recorded"] for d in got] == [3, 0]       # only rank 0 forecasts
    (rec,) = Ledger(tmp_path / "l.db").records()
    assert rec.run_id == "ddp" and [r["epoch"] for r in rec.epochs] == [1, 2, 3]
    assert rec.stopped["epoch"] == 3
    assert rec.hparams["batch_size"] == 32                     # 16 per device x 2


def test_batch_size_read_from_a_batch_sampler():
    """A loader built from a BatchSampler has batch_size None; the sampler knows it."""
    from torch.utils.data import BatchSampler, RandomSampler

    train, val = loaders()
    dataset = train.dataset
    sampled = DataLoader(dataset, batch_sampler=BatchSampler(RandomSampler(dataset), 8, False))
    assert sampled.batch_size is None
    cb = LightningForecastCallback("val_acc", dry_run=True, model=scripted())
    pl.seed_everything(0, verbose=False)
    trainer(cb, max_epochs=3).fit(TinyModule(), sampled, val)
    assert cb.monitor.record.hparams["batch_size"] == 8


def test_resume_with_validation_every_second_epoch(tmp_path):
    # Regression (issue 12.3): resuming with check_val_every_n_epoch=2 crashed with
    # "metric 'val_acc' was not logged"; epochs without validation are skipped.
    kwargs = dict(model=by_epoch({}, default=0.99), target_epoch=EPOCHS)

    def ckpt():
        return pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)

    cb = make(tmp_path, **kwargs)
    fit(cb, max_epochs=3, extra=[ckpt()], enable_checkpointing=True, check_val_every_n_epoch=2)
    assert [r["epoch"] for r in cb.monitor.record.epochs] == [2]
    resumed = make(tmp_path, **kwargs)
    fit(resumed, ckpt_path=tmp_path / "ckpt" / "last.ckpt", extra=[ckpt()],
        enable_checkpointing=True, check_val_every_n_epoch=2)
    assert [r["epoch"] for r in resumed.monitor.record.epochs] == [2, 4, 6]
    (stored,) = Ledger(tmp_path / "l.db").records()
    assert [r["epoch"] for r in stored.epochs] == [2, 4, 6]
    assert stored.extra["status"] == "completed"


class ScriptedAcc(TinyModule):
    """Logs a scripted ``val_acc`` (best at epoch 2)."""

    VALUES = [0.5, 0.7, 0.6, 0.55, 0.5, 0.5]

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.log("val_acc", self.VALUES[self.current_epoch])


class KeepWeights(pl.Callback):
    """Each epoch's weights once validation ends (no step comes between it and the epoch end)."""

    def __init__(self):
        self.weights = {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.weights[trainer.current_epoch + 1] = {
                k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_restore_best_weights_loads_the_best_epoch_back_on_our_stop(tmp_path):
    keep = KeepWeights()
    cb = make(tmp_path, restore_best_weights=True, min_delta=0.01)
    assert cb.monitor.policy.min_delta == 0.01
    module = ScriptedAcc()
    fit(cb, module=module, extra=[keep])
    assert cb.monitor.stopped["epoch"] == 3 and cb.restored_epoch == 2
    state = module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in keep.weights[2].items())
    assert any(not torch.equal(keep.weights[3][k], v) for k, v in keep.weights[2].items())
    assert cb.monitor.stopped["reason"].endswith("restored the weights of epoch 2")
    (stored,) = Ledger(tmp_path / "l.db").records()
    assert "restored the weights of epoch 2" in stored.stopped["reason"]

    plain, keep = make(), KeepWeights()                       # off: the last weights stay
    module = ScriptedAcc()
    fit(plain, module=module, extra=[keep])
    assert plain.restored_epoch is None
    assert all(torch.equal(module.state_dict()[k], v) for k, v in keep.weights[3].items())
