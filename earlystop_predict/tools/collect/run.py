"""Collect real learning curves: a resumable, parallel random search over small models.

:func:`collect` draws runs of the families of
:mod:`~earlystop_predict.tools.collect.families` (a random search over the declared
ranges, as people tune models), trains each through the project's own forecast
callback in ``dry_run`` mode (:mod:`~earlystop_predict.tools.collect.train`), so that
every run lands in ``DIR/ledger.db``, and appends each finished run's record
(RUN_RECORD.md) to ``DIR/runs.jsonl.gz``. At the end it writes
``DIR/DATASHEET.md``.

- Run ids are deterministic in ``(seed, index)`` (``digits-mlp-s0-00007``): a
  restart with the same arguments skips the runs already in the corpus and
  redoes, from scratch, a run that was interrupted. ``--runs`` may grow between
  sessions.
- The corpus is a multi-member gzip file: every finished run is one complete
  gzip member, appended, flushed and fsync'ed by the parent process. A member
  torn by a kill is cut off on the next start (the run is redone).
- ``workers`` processes (spawned, one thread each for torch and TensorFlow)
  train in parallel; ``workers=1`` trains in this process.

Records keep their hparams/meta canonical and add a ``collect`` object (family,
framework, index, seed, status ``completed | diverged``, seconds, device, data
parameters). Forecasts are not kept (the collection's forecaster is a constant;
the ledger has them); ``stopped`` is ``{"epoch", "reason": "diverged"}`` for a
run stopped by a NaN/inf loss or metric, else null.

Example:
    >>> from earlystop_predict.tools.collect.run import CollectOptions, collect, load_corpus
    >>> summary = collect(CollectOptions("corpus", families=("wine",), runs=2,
    ...                                  min_epochs=3, max_epochs=4))   # doctest: +SKIP
    >>> len(load_corpus("corpus/runs.jsonl.gz"))                        # doctest: +SKIP
    2
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shlex
import signal
import statistics
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from earlystop_predict.errors import ConfigError, MissingExtraError
from earlystop_predict.records.corpus import (  # noqa: F401 - re-exported for old callers
    CORPUS_NAME,
    append_record,
    corpus_lines,
    finished_ids,
    iter_corpus,
    load_corpus,
    repair_corpus,
)
from earlystop_predict.records.record import RunRecord, dumps
from earlystop_predict.tools.collect.families import (
    FAMILIES,
    SPACE,
    TORCH_FRAMEWORKS,
    RunConfig,
    draw_config,
    family,
)

LEDGER_NAME = "ledger.db"
DATASHEET_NAME = "DATASHEET.md"
SESSIONS_NAME = "sessions.jsonl"
ERRORS_NAME = "errors.log"
FRAMEWORK_CHOICES = ("auto", "lightning", "keras")
#: Import name and extra of each framework.
_FRAMEWORK_MODULES = {"lightning": ("lightning", "lightning"), "keras": ("keras", "keras"),
                      "transformers": ("transformers", "transformers")}
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


# ----------------------------------------------------------------------------- planning
@dataclass
class CollectOptions:
    """What to collect.

    Args:
        output: the output directory (created).
        families: family names (see :data:`~earlystop_predict.tools.collect.families.FAMILIES`);
            run ``index`` trains family ``families[index % len(families)]``.
            Default: all.
        runs: total runs wanted in the directory (finished ones are skipped), >= 1.
            Default 100.
        seed: seed of the search; run ids and configs derive from ``(seed, index)``.
            Default 0.
        workers: training processes, >= 1; 1 trains in this process. Default: the CPUs
            available.
        framework: ``"lightning"``, ``"keras"`` or ``"auto"`` (each run draws one of the
            installed two) for the non-HF families; ``text-hf`` always uses the HF
            Trainer. Default ``"auto"``.
        min_epochs: fewest planned epochs of a run, >= 2. Default 20.
        max_epochs: most planned epochs, >= min_epochs. Default 100.
        forecaster: ``"scripted"`` (a constant: fast, no model needed) or a model spec
            for the callbacks (``"auto"``, ``"lstm"``, ``"lightgbm"``, a directory).
            Default ``"scripted"``.
        pins: values that replace the drawn ones in every run (``{"learning_rate": 10}``);
            they change the run ids (a ``-p<hash>`` suffix). Default none.
        progress: show progress on stderr. Default True.
    """

    output: str | os.PathLike[str]
    families: Sequence[str] = tuple(FAMILIES)
    runs: int = 100
    seed: int = 0
    workers: int | None = None
    framework: str = "auto"
    min_epochs: int = 20
    max_epochs: int = 100
    forecaster: str = "scripted"
    pins: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True

    def check(self) -> None:
        """Raise :class:`ConfigError` for an argument out of range."""
        if not self.families:
            raise ConfigError("families", "at least one family", list(self.families))
        for name in self.families:
            family(name)
        if len(set(self.families)) != len(self.families):
            raise ConfigError("families", "names without repeats", list(self.families))
        for name, value, low in (("runs", self.runs, 1), ("seed", self.seed, 0),
                                 ("min_epochs", self.min_epochs, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(name, f"an integer >= {low}", value)
        if not isinstance(self.max_epochs, int) or self.max_epochs < self.min_epochs:
            raise ConfigError("max_epochs", f"an integer >= min_epochs ({self.min_epochs})",
                              self.max_epochs)
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError("workers", "an integer >= 1", self.workers)
        if self.framework not in FRAMEWORK_CHOICES:
            raise ConfigError("framework", " | ".join(FRAMEWORK_CHOICES), self.framework)

    @property
    def directory(self) -> Path:
        """The output directory."""
        return Path(self.output)

    def command(self) -> str:
        """The ``earlystop-predict collect`` command that regenerates these runs."""
        parts = ["earlystop-predict", "collect", "--output", str(self.output),
                 "--families", ",".join(self.families), "--runs", str(self.runs),
                 "--seed", str(self.seed), "--framework", self.framework,
                 "--min-epochs", str(self.min_epochs), "--max-epochs", str(self.max_epochs)]
        if self.forecaster != "scripted":
            parts += ["--forecaster", self.forecaster]
        for key, value in sorted(self.pins.items()):
            parts += ["--set", f"{key}={value}"]
        return shlex.join(parts)


@dataclass(frozen=True)
class RunSpec:
    """One planned run: its id, index in the search and drawn configuration."""

    run_id: str
    index: int
    config: RunConfig


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def installed(framework: str) -> bool:
    """True if ``framework`` (lightning | keras | transformers) can be imported."""
    module = _FRAMEWORK_MODULES[framework][0]
    return importlib.util.find_spec(module) is not None


def _pin_suffix(pins: Mapping[str, Any]) -> str:
    if not pins:
        return ""
    text = json.dumps({k: str(v) for k, v in sorted(pins.items())}, sort_keys=True)
    return "-p" + hashlib.sha1(text.encode()).hexdigest()[:6]


def run_id(name: str, seed: int, index: int, pins: Mapping[str, Any] | None = None) -> str:
    """The deterministic id of run ``index`` of the search with ``seed``.

    Example:
        >>> run_id("wine", 0, 7)
        'wine-s0-00007'
    """
    return f"{name}-s{seed}-{index:05d}{_pin_suffix(pins or {})}"


def _streams(seed: int, index: int) -> list[np.random.SeedSequence]:
    """Independent seed streams of run ``index``: (config draws, run seed, framework)."""
    return np.random.SeedSequence(seed, spawn_key=(index,)).spawn(3)


def _framework_for(opts: CollectOptions, name: str, index: int,
                   available: Callable[[str], bool]) -> str:
    fam = family(name)
    if len(fam.frameworks) == 1:  # text-hf(-steps), keras-mlp, lightning-sched
        return fam.frameworks[0]
    if opts.framework != "auto":
        return opts.framework
    rng = np.random.default_rng(_streams(opts.seed, index)[2])
    first = TORCH_FRAMEWORKS[int(rng.integers(len(TORCH_FRAMEWORKS)))]
    other = [f for f in TORCH_FRAMEWORKS if f != first][0]
    return first if available(first) or not available(other) else other


def plan(opts: CollectOptions, available: Callable[[str], bool] = installed) -> list[RunSpec]:
    """Every run of the search, index 0 to ``runs - 1`` (drawn, not trained)."""
    opts.check()
    specs = []
    for index in range(opts.runs):
        name = opts.families[index % len(opts.families)]
        draws, run_seed, _ = _streams(opts.seed, index)
        seed = int(run_seed.generate_state(1)[0])
        cfg = draw_config(name, np.random.default_rng(draws),
                          min_epochs=opts.min_epochs, max_epochs=opts.max_epochs,
                          framework=_framework_for(opts, name, index, available), seed=seed,
                          pins=opts.pins)
        specs.append(RunSpec(run_id(name, opts.seed, index, opts.pins), index, cfg))
    return specs


# ----------------------------------------------------------------------------- workers
def _init_worker() -> None:
    """Spawned worker: one thread per framework, quiet TensorFlow (before any import)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _single_thread(framework: str) -> None:
    if framework in ("lightning", "transformers"):
        import torch

        torch.set_num_threads(1)


def train_spec(spec: RunSpec, ledger: str | None, forecaster: str) -> dict[str, Any]:
    """Train one planned run; ``{"run_id", "ok", "record" | "error", "seconds"}``.

    Never raises on a failed run (the error text is returned), only on interrupts.
    """
    t0 = time.perf_counter()
    cfg = spec.config
    try:
        from earlystop_predict.tools.collect.train import preload, train_run

        preload(cfg.framework)  # a worker's first import is not the run's time
        _single_thread(cfg.framework)
        t0 = time.perf_counter()
        out = train_run(cfg, run_id=spec.run_id, ledger=ledger, forecaster=forecaster)
        data = out.record.to_dict()
        data.pop("forecasts", None)
        data["stopped"] = ({"epoch": out.diverged_epoch, "reason": "diverged"}
                           if out.diverged_epoch is not None else None)
        data["collect"] = {"family": cfg.family, "framework": cfg.framework,
                           "index": spec.index, "seed": cfg.seed, "status": out.status,
                           "seconds": round(out.seconds, 3), "device": out.device,
                           "data": cfg.data}
        RunRecord.from_dict(json.loads(dumps(data)))  # validated before it is kept
        return {"run_id": spec.run_id, "ok": True, "record": data, "seconds": out.seconds}
    except Exception:  # noqa: BLE001 - reported per run; the collection goes on
        return {"run_id": spec.run_id, "ok": False, "error": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}


def _worker_entry(spec: dict[str, Any], ledger: str | None, forecaster: str) -> dict[str, Any]:
    cfg = RunConfig.from_dict(spec["config"])
    return train_spec(RunSpec(spec["run_id"], int(spec["index"]), cfg), ledger, forecaster)


# ----------------------------------------------------------------------------- progress
def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class Progress:
    """Runs done / total with an ETA: a tqdm bar on a terminal, else one line per run.

    Args:
        total: runs of the search.
        done: runs already in the corpus.
        enabled: print anything. Default True.
        out: the stream. Default ``sys.stderr``.
    """

    def __init__(self, total: int, done: int, *, enabled: bool = True,
                 out: TextIO | None = None) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.enabled = enabled
        self.out = out or sys.stderr
        self.t0 = time.monotonic()
        self.diverged = self.failed = 0
        self.bar: Any = None
        if enabled and getattr(self.out, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done, unit="run", desc="collect",
                                file=self.out, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, run_id: str, status: str, seconds: float) -> None:
        """One run finished (``completed``, ``diverged`` or ``failed``)."""
        self.done += status != "failed"
        self.diverged += status == "diverged"
        self.failed += status == "failed"
        if not self.enabled:
            return
        if self.bar is not None:
            if status != "failed":
                self.bar.update(1)
            self.bar.set_postfix(diverged=self.diverged, failed=self.failed, refresh=False)
            return
        new = self.done - self.start_done
        elapsed = time.monotonic() - self.t0
        left = self.total - self.done
        eta = _fmt_seconds(elapsed / new * left) if new else "?"
        print(f"collect: {self.done}/{self.total} runs ({self.diverged} diverged, "
              f"{self.failed} failed) {run_id} {status} {seconds:.1f}s | "
              f"elapsed {_fmt_seconds(elapsed)} ETA {eta}", file=self.out, flush=True)

    def close(self) -> None:
        """End the bar."""
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- collect
@dataclass
class CollectSummary:
    """What a :func:`collect` call did.

    Attributes:
        total: runs of the search.
        skipped: runs found finished in the corpus at the start.
        trained: runs finished by this call (completed or diverged).
        diverged: of those, runs that diverged.
        failed: run ids whose training raised (retried by the next call).
        seconds: wall time of the call.
        seconds_by_family: per family, the training seconds of each run finished here.
        corpus: path of ``runs.jsonl.gz``.
    """

    total: int
    skipped: int
    trained: int = 0
    diverged: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seconds_by_family: dict[str, list[float]] = field(default_factory=dict)
    corpus: str = ""


def _log_session(directory: Path, opts: CollectOptions) -> None:
    from earlystop_predict import __version__

    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": opts.command(),
             "version": __version__, "workers": opts.workers}
    with open(directory / SESSIONS_NAME, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def _check_frameworks(specs: Sequence[RunSpec]) -> None:
    for fw in sorted({s.config.framework for s in specs}):
        module, extra = _FRAMEWORK_MODULES[fw]
        if not installed(fw):
            raise MissingExtraError(module, extra)


def _run_serial(specs: Sequence[RunSpec], ledger: str, forecaster: str,
                done: Callable[[RunSpec, dict[str, Any]], None]) -> None:
    saved = {v: os.environ.get(v) for v in _THREAD_VARS}
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")  # read by frameworks not imported yet
    torch_threads = None
    if "torch" in sys.modules:
        torch_threads = sys.modules["torch"].get_num_threads()
    try:
        for spec in specs:
            done(spec, train_spec(spec, ledger, forecaster))
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if torch_threads is not None:  # torch imported here keeps one thread
            sys.modules["torch"].set_num_threads(torch_threads)


def _run_pool(specs: Sequence[RunSpec], workers: int, ledger: str, forecaster: str,
              done: Callable[[RunSpec, dict[str, Any]], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # TF and torch are not fork-safe
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    try:
        futures = {pool.submit(_worker_entry, {"run_id": s.run_id, "index": s.index,
                                               "config": s.config.to_dict()},
                               ledger, forecaster): s for s in specs}
        for fut in as_completed(futures):
            spec = futures[fut]
            try:
                result = fut.result()
            except BrokenProcessPool as exc:
                result = {"run_id": spec.run_id, "ok": False, "seconds": 0.0,
                          "error": f"worker process died: {exc}"}
            done(spec, result)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): the runs in flight are redone on restart, so
        # stop their workers now rather than let them train on unobserved.
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool: Any) -> None:
    """Terminate (then kill) the pool's worker processes and let the interpreter exit
    without joining the pool's manager thread: a ``ProcessPoolExecutor`` whose workers
    were killed under it can leave that thread waiting forever, and Python joins it at
    exit (``concurrent.futures.process._python_exit``), which hung a SIGTERM'd collect."""
    import concurrent.futures.process as cfp

    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    wakeups = getattr(cfp, "_threads_wakeups", None)
    if manager is not None and isinstance(wakeups, dict):
        wakeups.pop(manager, None)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler's stop) unwinds like Ctrl-C: workers are
    stopped and the progress bar closed, instead of the default immediate exit
    that leaves spawned workers training on. The main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def collect(opts: CollectOptions) -> CollectSummary:
    """Train the runs of the search that the corpus lacks; write the datasheet.

    Args:
        opts: the search (see :class:`CollectOptions`).

    Returns:
        What was done; failed runs are listed (and logged to ``DIR/errors.log``),
        never raised.

    Raises:
        ConfigError: an option is out of range.
        MissingExtraError: a framework the planned runs need is not installed.

    With ``workers > 1`` the workers are spawned processes: a script that calls
    this must guard its entry point with ``if __name__ == "__main__":``.
    """
    t0 = time.monotonic()
    specs = plan(opts)
    directory = opts.directory
    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / CORPUS_NAME
    cut = repair_corpus(corpus)
    if cut:
        print(f"earlystop-predict collect: cut a torn last record ({cut} bytes) off {corpus}; "
              "its run is redone", file=sys.stderr)
    finished = finished_ids(corpus)
    todo = [s for s in specs if s.run_id not in finished]
    summary = CollectSummary(total=len(specs), skipped=len(specs) - len(todo),
                             corpus=str(corpus))
    _check_frameworks(todo)
    _log_session(directory, opts)
    ledger = str(directory / LEDGER_NAME)
    progress = Progress(len(specs), summary.skipped, enabled=opts.progress)

    def done(spec: RunSpec, result: dict[str, Any]) -> None:
        if result["ok"]:
            record = result["record"]
            append_record(corpus, record)
            status = record["collect"]["status"]
            summary.trained += 1
            summary.diverged += status == "diverged"
            summary.seconds_by_family.setdefault(spec.config.family, []).append(
                float(result["seconds"]))
        else:
            status = "failed"
            summary.failed.append(spec.run_id)
            with open(directory / ERRORS_NAME, "a", encoding="utf-8") as fh:
                fh.write(f"== {spec.run_id} ({spec.config.framework}) "
                         f"{json.dumps(spec.config.to_dict())}\n{result['error']}\n")
        progress.update(spec.run_id, status, float(result["seconds"]))

    workers = min(opts.workers or default_workers(), max(1, len(todo)))
    try:
        with _sigterm_exits():
            if todo and workers == 1:
                _run_serial(todo, ledger, opts.forecaster, done)
            elif todo:
                _run_pool(todo, workers, ledger, opts.forecaster, done)
    finally:
        progress.close()
    write_datasheet(directory)
    summary.seconds = time.monotonic() - t0
    return summary


# ----------------------------------------------------------------------------- datasheet
def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _count_table(title: str, counter: Counter[str], total: int) -> list[str]:
    rows = [(k, n, f"{100.0 * n / max(1, total):.1f} %") for k, n in sorted(counter.items())]
    return [f"### {title}", "", *_table((title.split(" ")[-1], "runs", "share"), rows), ""]


def _range(values: list[float], fmt: str = "{:.3g}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(min(values))} .. {fmt.format(max(values))}"


def _counts(records: Sequence[Mapping[str, Any]],
            hp: Sequence[Mapping[str, Any]]) -> list[str]:
    """The datasheet's count tables (optimizer, schedule, warm-up, scheduler, framework,
    status)."""
    n = len(records)
    lines = ["", "## Counts", ""]
    lines += _count_table("runs per optimizer", Counter(str(h.get("optimizer")) for h in hp), n)
    lines += _count_table("runs per lr_schedule",
                          Counter(str(h.get("lr_schedule")) for h in hp), n)
    lines += _count_table("runs per warm-up", Counter(
        "warm-up" if (h.get("warmup_fraction") or 0) > 0 else "none" for h in hp), n)
    lines += _count_table("runs per scheduler", Counter(
        str(h["scheduler_kind"]) for h in hp if "scheduler_kind" in h), n)
    lines += _count_table("runs per framework", Counter(
        str(r.get("collect", {}).get("framework")) for r in records), n)
    lines += _count_table("runs per status", Counter(
        str(r.get("collect", {}).get("status")) for r in records), n)
    return lines


def datasheet(records: Sequence[Mapping[str, Any]], commands: Sequence[str]) -> str:
    """DATASHEET.md text for corpus records (dicts as stored) and the commands used."""
    n = len(records)
    by_family: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_family[r.get("collect", {}).get("family", "?")].append(r)
    diverged = sum(r.get("collect", {}).get("status") == "diverged" for r in records)
    lines = ["# Learning-curve corpus: datasheet", "",
             f"{n} runs ({diverged} diverged) of a random search over small models, trained "
             "with earlystop_predict's own callbacks (dry run, every run also in `ledger.db`). "
             f"Records: `{CORPUS_NAME}` (gzip JSON Lines, RUN_RECORD.md shape; read with "
             "`earlystop_predict.tools.collect.run.load_corpus`). Target metric: `val_accuracy` "
             "(max); rows also hold `val_loss`, `train_loss` and, except for the HF "
             "families, `train_accuracy`, plus `time` (s). A `text-hf-steps` row is one "
             "evaluation every `meta.eval_steps` optimizer steps (`eval_strategy=\"steps\"`): "
             "`epoch` is the evaluation's index, `step` its step, `meta.max_epochs` the "
             "planned evaluations.", "",
             "## Families", ""]
    fam_rows = []
    for name, fam in FAMILIES.items():
        runs = by_family.get(name, [])
        secs = [float(r["collect"].get("seconds", 0)) for r in runs]
        epochs = [len(r.get("epochs", [])) for r in runs]
        fam_rows.append((name, fam.task, fam.arch, "/".join(fam.frameworks), len(runs),
                         sum(r["collect"].get("status") == "diverged" for r in runs),
                         f"{statistics.median(secs):.1f}" if secs else "-",
                         f"{statistics.mean(epochs):.0f}" if epochs else "-",
                         fam.description))
    lines += _table(("family", "task", "arch", "frameworks", "runs", "diverged",
                     "median s/run", "mean epochs", "data and model"), fam_rows)
    lines += ["", "## Hyperparameter ranges (declared)", "",
              "Drawn independently per run (`collect_families.SPACE`); `p0` is the "
              "probability of exactly 0, ranges are [low, high].", ""]
    lines += _table(("key", "distribution"),
                    [(k, "`" + json.dumps(v, default=list) + "`") for k, v in SPACE.items()])
    lines += [""]
    lines += _table(("family", "num_layers", "width choices", "batch sizes", "data_fraction"),
                    [(f.name, f"{f.num_layers[0]}..{f.num_layers[1]}",
                      ", ".join(map(str, f.widths)), ", ".join(map(str, f.batch_sizes)),
                      f"{f.data_fraction[0]:g}..{f.data_fraction[1]:g}")
                     for f in FAMILIES.values()])
    lines += _family_spaces()
    hp = [r.get("hparams", {}) for r in records]
    meta = [r.get("meta", {}) for r in records]

    def values(rows: list[Mapping[str, Any]], key: str) -> list[float]:
        return [float(x[key]) for x in rows if isinstance(x.get(key), (int, float))]

    lines += ["", "## Observed ranges", ""]
    lines += _table(("key", "min .. max"), [
        ("learning_rate", _range(values(hp, "learning_rate"))),
        ("weight_decay", _range(values(hp, "weight_decay"))),
        ("momentum", _range(values(hp, "momentum"))),
        ("dropout", _range(values(hp, "dropout"))),
        ("batch_size", _range(values(hp, "batch_size"), "{:.0f}")),
        ("width", _range(values(hp, "width"), "{:.0f}")),
        ("num_layers", _range(values(hp, "num_layers"), "{:.0f}")),
        ("warmup_fraction", _range(values(hp, "warmup_fraction"))),
        ("max_epochs", _range(values(meta, "max_epochs"), "{:.0f}")),
        ("train_size", _range(values(meta, "train_size"), "{:.0f}")),
        ("num_params", _range(values(meta, "num_params"), "{:.0f}")),
    ])
    lines += _counts(records, hp)
    lines += ["Diverged runs (a NaN/inf loss or metric) are kept: trained up to that epoch, "
              "`stopped = {\"epoch\": k, \"reason\": \"diverged\"}`, NaN values as null.", "",
              "## How to regenerate", "",
              "Run ids and configurations derive from `(seed, index)`; re-running a command "
              "in the same directory skips finished runs. `--workers` changes speed only "
              "(results may differ in the last digits between CPU and GPU).", "", "```sh",
              *commands, "```", "",
              "Notes: Keras applies weight decay decoupled (as AdamW), torch's SGD/Adam/RMSprop "
              "as L2; the HF Trainer clips gradients at norm 1.0 (its default). A family with "
              "its own epoch range draws in it clipped to `--min-epochs`/`--max-epochs`. "
              "`keras-mlp` and `lightning-sched` record the scheduler's canonical "
              "`lr_schedule` (OneCycle, plateau and warm restarts: `other`; exponential and "
              "multistep: `step`) and its name in `hparams.scheduler_kind`.", ""]
    return "\n".join(lines)


def _family_spaces() -> list[str]:
    """The table of the families' own declared ranges (epochs and ``Family.space``)."""
    rows = []
    for fam in FAMILIES.values():
        if fam.epochs is not None:
            rows.append((fam.name, "max_epochs", f"`{list(fam.epochs)}` (clipped to the "
                         "command's range)"))
        rows += [(fam.name, key, "`" + json.dumps(value, default=list) + "`")
                 for key, value in fam.space.items()]
    if not rows:
        return []
    return ["", "Families with ranges of their own (they replace or add to those above):",
            "", *_table(("family", "key", "distribution"), rows)]


def _regeneration_commands(commands: list[str], records: list[dict[str, Any]]) -> list[str]:
    """The logged commands reduced to what the corpus holds: sessions that differ only
    in ``--runs`` merged, and ``--runs`` cut to the runs of that seed actually in the
    corpus (a session stopped early, or superseded, planned more)."""
    top: dict[int, int] = {}
    for rec in records:
        m = re.search(r"-s(\d+)-(\d+)", str(rec.get("run_id", "")))
        if m:
            seed, index = int(m.group(1)), int(m.group(2))
            top[seed] = max(top.get(seed, -1), index)
    merged: dict[tuple[str, ...], int] = {}
    for cmd in commands:
        parts = shlex.split(cmd)
        try:
            runs = int(parts[parts.index("--runs") + 1])
            seed = int(parts[parts.index("--seed") + 1])
        except (ValueError, IndexError):
            continue
        runs = min(runs, top.get(seed, -1) + 1)
        if runs <= 0:
            continue
        key = tuple(p for i, p in enumerate(parts) if p != "--runs" and parts[i - 1] != "--runs")
        merged[key] = max(merged.get(key, 0), runs)
    out = []
    for key, runs in merged.items():
        parts = list(key)
        at = parts.index("--seed")
        out.append(shlex.join(parts[:at] + ["--runs", str(runs)] + parts[at:]))
    return out


def write_datasheet(directory: str | os.PathLike[str]) -> Path:
    """Write ``DIR/DATASHEET.md`` from the corpus and the sessions log; return its path."""
    directory = Path(directory)
    corpus = directory / CORPUS_NAME
    records = [json.loads(line) for _, line in corpus_lines(corpus)] if corpus.exists() else []
    commands: list[str] = []
    sessions = directory / SESSIONS_NAME
    if sessions.exists():
        for line in sessions.read_text(encoding="utf-8").splitlines():
            try:
                cmd = json.loads(line)["command"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if cmd not in commands:
                commands.append(cmd)
    commands = _regeneration_commands(commands, records)
    target = directory / DATASHEET_NAME
    tmp = directory / f".{DATASHEET_NAME}.tmp"
    tmp.write_text(datasheet(records, commands), encoding="utf-8")
    os.replace(tmp, target)
    return target
