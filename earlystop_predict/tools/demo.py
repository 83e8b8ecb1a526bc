"""A live demo: train a few small networks, stop the doomed ones early.

Trains a handful of MLP configurations on scikit-learn's bundled ``load_digits``
(nothing is downloaded; without scikit-learn, a synthetic 10-class problem),
some good, some hopeless (a tiny or a huge learning rate, heavy dropout), each
with the framework's forecast callback. A run is stopped when its forecast is
unlikely to beat the best finished run of the study ``"demo"`` (the incumbent)
or to reach ``threshold``. The demo ends with a table of forecasts, stops and
epochs saved; ``audit=True`` trains the stopped runs on to the end to show the
value they would have reached (the epochs past the stop go to the ledger too, the
run staying stopped, so ``earlystop-predict report`` can say what each stop cost).
On a terminal the forecasts update live, one line per run; piped or written to a
file, each epoch's forecast is a plain line.

The frameworks load only when :func:`run_demo` runs.

Example:
    >>> from earlystop_predict.tools.demo import run_demo
    >>> report = run_demo("keras", configs=6, epochs=30)     # doctest: +SKIP
    >>> report.epochs_saved                                  # doctest: +SKIP
    71
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import numpy as np

from earlystop_predict.errors import ConfigError
from earlystop_predict.forecast.base import Forecast, Forecaster
from earlystop_predict.forecast.compose import load_model
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.records.features import canonical_metrics
from earlystop_predict.records.record import finite_or_none

FRAMEWORKS = ("keras", "lightning")
STUDY = "demo"
METRIC = "val_accuracy"
_BARS = "▁▂▃▄▅▆▇█"


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class DemoConfig:
    """One MLP training configuration.

    Args:
        name: short label shown in the output.
        optimizer: ``"adam"``, ``"sgd"`` (momentum 0.9) or ``"rmsprop"``.
        learning_rate: initial learning rate, > 0.
        width: units per hidden layer, >= 1.
        num_layers: hidden layers, >= 1.
        dropout: dropout rate after each hidden layer, in [0, 1).
        batch_size: examples per step, >= 1. Default 64.
        expect: what the demo expects of it: ``"good"`` or ``"hopeless"``.
    """

    name: str
    optimizer: str
    learning_rate: float
    width: int
    num_layers: int
    dropout: float
    batch_size: int = 64
    expect: str = "good"

    def summary(self) -> str:
        """``adam lr=1e-03 64x1 drop=0.1 bs=64``."""
        return (f"{self.optimizer} lr={self.learning_rate:.0e} {self.width}x{self.num_layers}"
                f" drop={self.dropout:g} bs={self.batch_size}")


#: Good ones first, so the incumbent (the best finished run) exists early.
BASE_CONFIGS: tuple[DemoConfig, ...] = (
    DemoConfig("adam", "adam", 2e-3, 64, 1, 0.1),
    DemoConfig("tiny-lr", "sgd", 1e-5, 64, 1, 0.0, expect="hopeless"),
    DemoConfig("sgd", "sgd", 0.05, 128, 2, 0.1),
    DemoConfig("huge-lr", "adam", 3.0, 64, 2, 0.0, expect="hopeless"),
    DemoConfig("rmsprop", "rmsprop", 1e-3, 32, 1, 0.0),
    DemoConfig("dropout", "adam", 1e-3, 16, 2, 0.9, expect="hopeless"),
)


def make_configs(n: int, seed: int = 0) -> list[DemoConfig]:
    """``n`` configurations: :data:`BASE_CONFIGS` first, then seeded variations of them.

    Args:
        n: how many, >= 1.
        seed: seed of the variations. Default 0.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("configs", "an integer >= 1", n)
    rng = np.random.default_rng(seed)
    out = list(BASE_CONFIGS[:n])
    while len(out) < n:
        base = BASE_CONFIGS[len(out) % len(BASE_CONFIGS)]
        out.append(replace(base, name=f"{base.name}-{len(out)}",
                           learning_rate=float(base.learning_rate * 10 ** rng.uniform(-0.5, 0.5)),
                           width=int(base.width * rng.choice([0.5, 1, 2]))))
    return out


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DemoData:
    """Train and validation arrays: ``x`` float32 in roughly [-3, 3], ``y`` int labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    name: str
    num_classes: int = 10


def load_data(seed: int = 0) -> DemoData:
    """``load_digits`` (1797 8x8 images, 10 classes) split 80/20, standardised.

    Falls back to a synthetic 10-class Gaussian problem of the same shape when
    scikit-learn is not installed. Nothing is downloaded.
    """
    rng = np.random.default_rng(seed)
    try:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y, name = digits.data.astype(np.float32), digits.target.astype(np.int64), \
            "sklearn-digits"
    except ImportError:
        centers = rng.normal(0.0, 1.0, size=(10, 64))
        y = rng.integers(0, 10, size=1797)
        x = (centers[y] + rng.normal(0.0, 2.5, size=(1797, 64))).astype(np.float32)
        name = "synthetic-digits"
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-6
    x = ((x - mean) / std).astype(np.float32)
    return DemoData(x[:cut], y[:cut], x[cut:], y[cut:], name)


# ----------------------------------------------------------------------------- results
@dataclass
class DemoRun:
    """The outcome of one configuration.

    Attributes:
        config: the configuration.
        run_id: its id in the ledger.
        epochs_run: epochs trained before the stop (or to the end).
        stopped: ``{"epoch", "reason"}`` if stopped early, else None.
        last_value: the validation accuracy at the last epoch trained.
        forecast: the forecast shown: at the stop for a stopped run, else the first
            one that could have stopped it (at ``min_epochs``).
        forecast_epoch: the epoch that forecast was made at.
        final_value: the accuracy at the last epoch: observed for a completed run,
            from the audit for a stopped one (None without audit).
        values: validation accuracy per epoch trained.
        means: forecast mean per epoch trained (NaN where none was made).
    """

    config: DemoConfig
    run_id: str
    epochs_run: int
    stopped: dict[str, Any] | None
    last_value: float | None
    forecast: Forecast | None
    forecast_epoch: int | None
    final_value: float | None = None
    values: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)


@dataclass
class DemoReport:
    """All runs of a demo, with the epochs budget and what was saved."""

    framework: str
    epochs: int
    runs: list[DemoRun]
    seconds: float

    @property
    def epochs_budget(self) -> int:
        """Epochs all runs would have trained without stopping."""
        return self.epochs * len(self.runs)

    @property
    def epochs_trained(self) -> int:
        """Epochs actually trained (audits not counted)."""
        return sum(r.epochs_run for r in self.runs)

    @property
    def epochs_saved(self) -> int:
        """Epochs the stops saved."""
        return self.epochs_budget - self.epochs_trained


def _forecast_from(entry: dict[str, Any]) -> Forecast | None:
    if "mean" not in entry:
        return None
    return Forecast(mean=float(entry["mean"]), quantiles=dict(entry.get("quantiles", {})),
                    model=str(entry.get("model", "")), target_epoch=int(entry["target_epoch"]),
                    observed_epochs=int(entry["at_epoch"]))


def summarise(config: DemoConfig, monitor: ForecastMonitor, min_epochs: int) -> DemoRun:
    """A :class:`DemoRun` from a finished run's monitor."""
    rec = monitor.record
    values = [float(v) for v in rec.series(rec.metric)]
    by_epoch = {int(f["at_epoch"]): f for f in rec.forecasts}
    means = [float(by_epoch.get(int(r["epoch"]), {}).get("mean", math.nan))
             for r in rec.epochs]
    stopped = monitor.stopped
    at = stopped["epoch"] if stopped else min_epochs
    entry = by_epoch.get(at) or next((f for f in reversed(rec.forecasts) if "mean" in f), {})
    forecast = _forecast_from(entry) if entry else None
    last = rec.final_value()
    return DemoRun(config=config, run_id=rec.run_id, epochs_run=rec.last_epoch,
                   stopped=stopped, last_value=last,
                   forecast=forecast, forecast_epoch=forecast.observed_epochs if forecast
                   else None, final_value=None if stopped else last, values=values,
                   means=means)


# ----------------------------------------------------------------------------- output
def spark(values: Sequence[float]) -> str:
    """One bar character per value in [0, 1] (``·`` for NaN)."""
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append("·")
        else:
            out.append(_BARS[min(len(_BARS) - 1, max(0, int(v * len(_BARS))))])
    return "".join(out)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_forecast(fc: Forecast | None) -> str:
    if fc is None:
        return "-"
    return f"{fc.mean:.3f} [{fc.quantile(0.1):.3f}, {fc.quantile(0.9):.3f}]"


class Progress:
    """Prints each epoch's forecast: on a terminal one line per run, updated live;
    elsewhere (a pipe, a file) a plain line per epoch, then one per run.

    Args:
        out: the stream. Default ``sys.stdout``.
        total: number of runs.
        epochs: planned epochs per run.
        verbose: 0 silent, 1 the per-epoch forecasts (live on a terminal), 2 a plain
            line per epoch even on a terminal. Default 1.
    """

    def __init__(self, out: TextIO, total: int, epochs: int, verbose: int = 1) -> None:
        self.out = out
        self.total = total
        self.epochs = epochs
        self.verbose = verbose
        self.live = verbose == 1 and bool(getattr(out, "isatty", lambda: False)())
        self.index = 0
        self.config: DemoConfig | None = None

    def start(self, index: int, config: DemoConfig) -> None:
        """A new run begins."""
        self.index, self.config = index, config

    def _line(self, monitor: ForecastMonitor) -> str:
        rec = monitor.record
        name = self.config.name if self.config else ""
        last = next((f for f in reversed(rec.forecasts) if "mean" in f), None)
        fc = _forecast_from(last) if last else None
        vals = [float(v) for v in rec.series(rec.metric)]
        return (f"[{self.index + 1}/{self.total}] {name:<10.10} ep {rec.last_epoch:>3}/"
                f"{self.epochs} val {_fmt(rec.final_value())}  forecast@{monitor.target_epoch}"
                f" {_fmt_forecast(fc):<23} {spark(vals)}")

    def epoch(self, monitor: ForecastMonitor) -> None:
        """After each epoch (the monitor has decided)."""
        if self.verbose >= 2 or (self.verbose == 1 and not self.live):
            print("   " + self._line(monitor), file=self.out, flush=True)
        elif self.live:
            print("\r" + self._line(monitor) + "\x1b[K", end="", file=self.out, flush=True)

    def finish(self, monitor: ForecastMonitor) -> None:
        """The run ended (stopped or completed)."""
        if self.verbose < 1:
            return
        stop = monitor.stopped
        tail = f"STOPPED: {stop['reason']}" if stop else "completed"
        line = self._line(monitor) + "  " + tail
        print(("\r" + line + "\x1b[K") if self.live else line, file=self.out, flush=True)


def render_table(report: DemoReport) -> str:
    """The final table: one row per run, then the epochs saved."""
    head = ("#", "run", "hyperparameters", "expect", "stopped", "forecast (at epoch)",
            "last val", f"final@{report.epochs}", "saved")
    rows = []
    for i, r in enumerate(report.runs):
        fc = (f"{_fmt_forecast(r.forecast)} @{r.forecast_epoch}" if r.forecast else "-")
        stopped = f"ep {r.stopped['epoch']}" if r.stopped else "-"
        if r.stopped and str(r.stopped.get("reason")) == "diverged":
            stopped += " (NaN)"
        final = _fmt(r.final_value)
        if r.stopped and r.final_value is not None:
            final += " (audit)"
        rows.append((str(i + 1), r.config.name, r.config.summary(), r.config.expect, stopped,
                     fc, _fmt(r.last_value), final, str(report.epochs - r.epochs_run)))
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    pct = 100.0 * report.epochs_saved / max(1, report.epochs_budget)
    lines.append(f"epochs trained {report.epochs_trained} of {report.epochs_budget}: "
                 f"{report.epochs_saved} saved ({pct:.0f} %) in {report.seconds:.0f} s")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- trainers
# A trainer: (config, data, epochs, seed, callback kwargs, progress, audit) ->
# (monitor, final value of the audit or None).
TrainFn = Callable[..., tuple[ForecastMonitor, float | None]]


#: Lines TensorFlow's native code writes to stderr as it loads (absl logging before
#: its InitializeLog, the oneDNN notice): no environment variable silences them.
_TF_LOAD_NOISE = ("absl::InitializeLog()", "oneDNN custom operations are on")


@contextmanager
def _filtered_native_stderr(drop: Sequence[str]) -> Iterator[None]:
    """Catch what native code writes to file descriptor 2 meanwhile; pass on every line
    but those containing one of ``drop`` (to ``sys.stderr``, after the block)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(True)
                    if not any(d in line for d in drop)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _import_keras() -> Any:
    """``earlystop_predict.integrations.keras``, TensorFlow loaded without its INFO lines
    (``TF_CPP_MIN_LOG_LEVEL=2`` unless set, absl's Python logger at ERROR)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        from earlystop_predict.integrations import keras as adapter
    else:
        with _filtered_native_stderr(_TF_LOAD_NOISE):
            from earlystop_predict.integrations import keras as adapter
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        pass
    return adapter


def _log_audit(monitor: ForecastMonitor, rows: Sequence[dict[str, Any]]) -> None:
    """Record the epochs an audit trained past the stop in the run's ledger (no
    decision: nothing was forecast), so the report can say what the stop cost."""
    if monitor.ledger is None:
        return
    for row in rows:
        clean = {k: v for k, v in canonical_metrics(row).items() if k == "epoch"
                 or finite_or_none(v) is not None}
        monitor.ledger.log_epoch(monitor.record.run_id, clean)


def _train_keras(config: DemoConfig, data: DemoData, epochs: int, seed: int,
                 cb_kwargs: dict[str, Any], progress: Progress,
                 audit: bool) -> tuple[ForecastMonitor, float | None]:
    adapter = _import_keras()
    KerasForecastCallback, keras = adapter.KerasForecastCallback, adapter.keras  # noqa: N806

    keras.utils.set_random_seed(seed)
    layers: list[Any] = [keras.Input((data.x_train.shape[1],))]
    for _ in range(config.num_layers):
        layers += [keras.layers.Dense(config.width, activation="relu"),
                   keras.layers.Dropout(config.dropout)]
    layers.append(keras.layers.Dense(data.num_classes, activation="softmax"))
    model = keras.Sequential(layers)
    opt = {"adam": lambda: keras.optimizers.Adam(config.learning_rate),
           "sgd": lambda: keras.optimizers.SGD(config.learning_rate, momentum=0.9),
           "rmsprop": lambda: keras.optimizers.RMSprop(config.learning_rate)}[config.optimizer]
    model.compile(opt(), "sparse_categorical_crossentropy", metrics=["accuracy"])
    cb = KerasForecastCallback(METRIC, **cb_kwargs)
    show = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: progress.epoch(cb.monitor))
    fit = dict(validation_data=(data.x_val, data.y_val), batch_size=config.batch_size, verbose=0)
    model.fit(data.x_train, data.y_train, epochs=epochs, callbacks=[cb, show], **fit)
    final = None
    if audit and cb.monitor.stopped:
        start = cb.monitor.record.last_epoch
        hist = model.fit(data.x_train, data.y_train, epochs=epochs, initial_epoch=start, **fit)
        final = float(hist.history["val_accuracy"][-1])
        _log_audit(cb.monitor, [{"epoch": start + i + 1,
                                 **{k: float(v[i]) for k, v in hist.history.items()}}
                                for i in range(len(hist.history["val_accuracy"]))])
    return cb.monitor, final


def _train_lightning(config: DemoConfig, data: DemoData, epochs: int, seed: int,
                     cb_kwargs: dict[str, Any], progress: Progress,
                     audit: bool) -> tuple[ForecastMonitor, float | None]:
    import logging

    import torch

    from earlystop_predict.integrations.lightning import pl

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    pl.seed_everything(seed, verbose=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: more threads only contend (4x slower on 2 cores)
    try:
        return _fit_lightning(config, data, epochs, seed, cb_kwargs, progress, audit)
    finally:
        torch.set_num_threads(threads)


def _fit_lightning(config: DemoConfig, data: DemoData, epochs: int, seed: int,
                   cb_kwargs: dict[str, Any], progress: Progress,
                   audit: bool) -> tuple[ForecastMonitor, float | None]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from earlystop_predict.integrations._hparams import scalar_metrics
    from earlystop_predict.integrations.lightning import LightningForecastCallback, pl

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            mods: list[torch.nn.Module] = []
            width_in = data.x_train.shape[1]
            for _ in range(config.num_layers):
                mods += [torch.nn.Linear(width_in, config.width), torch.nn.ReLU(),
                         torch.nn.Dropout(config.dropout)]
                width_in = config.width
            mods.append(torch.nn.Linear(width_in, data.num_classes))
            self.net = torch.nn.Sequential(*mods)

        def training_step(self, batch: Any, _: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            out = self.net(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(out, y))
            self.log(METRIC, (out.argmax(1) == y).float().mean())

        def configure_optimizers(self) -> Any:
            params, lr = self.parameters(), config.learning_rate
            if config.optimizer == "sgd":
                return torch.optim.SGD(params, lr=lr, momentum=0.9)
            if config.optimizer == "rmsprop":
                return torch.optim.RMSprop(params, lr=lr)
            return torch.optim.Adam(params, lr=lr)

    class Show(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            progress.epoch(cb.monitor)

    class Collect(pl.Callback):
        def __init__(self, rows: list[dict[str, Any]]) -> None:
            self.rows = rows

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.rows.append({"epoch": trainer.current_epoch + 1,
                              **scalar_metrics(trainer.callback_metrics)})

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(tensors(data.x_train, data.y_train), batch_size=config.batch_size,
                       shuffle=True, generator=gen)
    val = DataLoader(tensors(data.x_val, data.y_val), batch_size=512)

    def trainer(max_epochs: int, callbacks: list[Any]) -> Any:
        return pl.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0,
                          callbacks=callbacks)

    cb = LightningForecastCallback(METRIC, **cb_kwargs)
    module = MLP()
    tr = trainer(epochs, [cb, Show()])
    tr.fit(module, train, val)
    final = None
    if audit and cb.monitor.stopped:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "stopped.ckpt")
            tr.save_checkpoint(path)
            rows: list[dict[str, Any]] = []
            on = trainer(epochs, [Collect(rows)])
            on.fit(module, train, val, ckpt_path=path)
            final = float(on.callback_metrics[METRIC])
            _log_audit(cb.monitor, rows)
    return cb.monitor, final


_TRAINERS: dict[str, TrainFn] = {"keras": _train_keras, "lightning": _train_lightning}


# ----------------------------------------------------------------------------- the demo
def run_demo(framework: str = "keras", *, configs: int | Sequence[DemoConfig] = 6,
             epochs: int = 30, threshold: float | None = None, confidence: float = 0.95,
             min_epochs: int = 5, patience: int = 1, seed: int = 0,
             ledger: str | os.PathLike[str] | None = None,
             model: str | os.PathLike[str] | Forecaster = "auto", audit: bool = False,
             out: TextIO | None = None, verbose: int = 1) -> DemoReport:
    """Train small MLPs on digits with the forecast callback; print progress and a table.

    Args:
        framework: ``"keras"`` or ``"lightning"``. Default ``"keras"``.
        configs: how many configurations (see :func:`make_configs`), >= 1, or the
            configurations themselves. Default 6.
        epochs: planned epochs per run (the forecast target), > min_epochs. Default 30.
        threshold: validation accuracy a run must be likely to reach, in [0, 1];
            None: the incumbent rule only. Default None.
        confidence: quantile level that must clear the bar, in (0.5, 1). Default 0.95.
        min_epochs: first epoch a run may be stopped at, >= 1. Default 5.
        patience: consecutive poor forecasts before a stop, >= 1. Default 1.
        seed: seed of data split, weights and variations. Default 0.
        ledger: SQLite ledger path (kept); None: a temporary one. Default None.
        model: the forecaster: ``"auto"`` (bundled LSTM and LightGBM averaged), a model
            directory or a :class:`~earlystop_predict.forecast.base.Forecaster`.
            Default ``"auto"``.
        audit: train stopped runs on to the end, to show what they would have
            reached (costs the saved epochs back). Default False.
        out: where to print. Default ``sys.stdout``.
        verbose: 0 table only, 1 a line per run, 2 a line per epoch. Default 1.

    Returns:
        The :class:`DemoReport` (its table is printed last).

    Raises:
        ConfigError: a bad framework, count or epochs.
        MissingExtraError: the framework is not installed (names the extra).
        ModelArtifactError: the bundled model cannot be loaded.
    """
    if framework not in FRAMEWORKS:
        raise ConfigError("framework", " or ".join(repr(f) for f in FRAMEWORKS), framework)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 2:
        raise ConfigError("epochs", "an integer >= 2", epochs)
    cfgs = make_configs(configs, seed) if isinstance(configs, int) else list(configs)
    out = out if out is not None else sys.stdout
    train = _TRAINERS[framework]
    forecaster = model if isinstance(model, Forecaster) else load_model(model)
    data = load_data(seed)
    progress = Progress(out, len(cfgs), epochs, verbose)
    if verbose:
        print(f"earlystop-predict demo: {len(cfgs)} MLPs on {data.name} "
              f"({len(data.x_train)} train / {len(data.x_val)} val), {framework}, "
              f"{epochs} epochs each; study {STUDY!r}, threshold {threshold}, "
              f"confidence {confidence}", file=out, flush=True)
    runs: list[DemoRun] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*ckpt_path.*callbacks used to create.*")
        ledger_path = ledger if ledger is not None else os.path.join(tmp, "demo.db")
        for i, cfg in enumerate(cfgs):
            progress.start(i, cfg)
            cb_kwargs = dict(threshold=threshold, confidence=confidence, min_epochs=min_epochs,
                             patience=patience, study=STUDY, ledger=ledger_path,
                             model=forecaster, run_id=f"demo-{framework}-s{seed}-{i + 1:02d}",
                             task=data.name)
            monitor, final = train(cfg, data, epochs, seed + i, cb_kwargs, progress, audit)
            progress.finish(monitor)
            run = summarise(cfg, monitor, min_epochs)
            if final is not None:
                run.final_value = final
            runs.append(run)
            if monitor.ledger is not None:
                monitor.ledger.close()
    report = DemoReport(framework, epochs, runs, time.perf_counter() - t0)
    print(("\n" if verbose else "") + render_table(report), file=out, flush=True)
    return report
