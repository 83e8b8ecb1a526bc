"""The Ray Tune scheduler on a real two-node cluster (a head and a second node on
loopback, started here with ``ray start --block`` and stopped by the fixture): trials
pinned to each node are forecast and stopped there, and the driver's ledger holds them
all."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")

from earlystop_predict.forecast.base import ScriptedForecaster  # noqa: E402
from earlystop_predict.integrations.ray import ForecastScheduler  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402

EPOCHS = 6
START_S = 60  # each node's start, at the most
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _auth_mode() -> str:
    """This driver's token authentication mode (read once a process, when Ray first
    needs it), for the nodes: they then take the token in ``~/.ray`` as it does."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # an older Ray: no token authentication
        return "disabled"
    return "token" if is_token_auth_enabled() else "disabled"


def _node(args: list[str], log: str) -> subprocess.Popen:
    """``ray start --block ARGS`` in its own session: stopping it (SIGTERM) stops the Ray
    processes it started, and its process group holds whatever is left."""
    ports = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus=1",
           "--object-store-memory=100000000", "--disable-usage-stats",
           *[f"{p}={_free_port()}" for p in ports], *args]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": _auth_mode()}
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the session started above
    except (ProcessLookupError, PermissionError):
        pass


def _wait_nodes(address: str, n: int, procs: list[subprocess.Popen], logs: list[str]) -> None:
    """Connect this driver once the head's port answers; wait for ``n`` live nodes."""
    deadline = time.monotonic() + START_S
    host, port = address.split(":")
    while time.monotonic() < deadline:
        dead = [log for p, log in zip(procs, logs, strict=False) if p.poll() is not None]
        if dead:
            pytest.skip(f"a Ray node could not start: {open(dead[0]).read()[-600:]}")
        if not ray.is_initialized():
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                time.sleep(0.5)
                continue
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        if sum(1 for node in ray.nodes() if node["Alive"]) >= n:
            return
        time.sleep(0.5)
    pytest.skip(f"the {n} Ray nodes did not come up within {START_S} s")


@pytest.fixture(scope="module")
def cluster():
    """A head (resource ``head``) and a second node (resource ``worker``), one CPU each."""
    if ray.is_initialized():
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs = [os.path.join(tmp, "head.log"), os.path.join(tmp, "worker.log")]
    try:
        procs.append(_node(["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                            "--include-dashboard=false", f"--temp-dir={tmp}/ray",
                            f"--ray-client-server-port={_free_port()}",
                            '--resources={"head": 1}'], logs[0]))
        _wait_nodes(address, 1, procs, logs)
        procs.append(_node([f"--address={address}", "--node-ip-address=127.0.0.1",
                            '--resources={"worker": 1}'], logs[1]))
        _wait_nodes(address, 2, procs, logs)
        yield {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def pinned(config: dict) -> None:
    """A synthetic curve towards ``top``; the trials of one ``top`` (one on each node)
    start together (the nodes share this machine's disk), so that they run side by side."""
    node = ray.get_runtime_context().get_node_id()
    mine = os.path.join(config["sync"], f"{config['top']}-{config['node']}")
    other = mine.replace(config["node"], "worker" if config["node"] == "head" else "head")
    open(mine, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(other) and time.monotonic() < deadline:
        time.sleep(0.05)
    for epoch in range(1, EPOCHS + 1):
        acc = config["top"] - (config["top"] - 0.1) * epoch ** -0.8
        tune.report({"val_accuracy": acc, "node_id": node})


class _Sized(ScriptedForecaster):
    """Forecasts a trial's ``top``; notes how many runs each call forecast."""

    def __init__(self) -> None:
        super().__init__(lambda rec, m: rec.hparams["top"])
        self.sizes: list[int] = []

    def forecast_many(self, records, target_epoch):
        self.sizes.append(len(records))
        return super().forecast_many(records, target_epoch)


@pytest.mark.parametrize("batch", [False, True], ids=["one-at-a-time", "batched"])
def test_trials_on_both_nodes_are_forecast_stopped_and_in_the_driver_ledger(
        cluster, tmp_path, batch) -> None:
    ledger = tmp_path / "runs.db"
    model = _Sized()
    sched = ForecastScheduler(EPOCHS, min_epochs=2, threshold=0.5, use_incumbent=False,
                              model=model, ledger=str(ledger), study="cluster", batch=5.0 * batch)
    tops = [0.9, 0.3, 0.35]
    trainable = tune.with_resources(pinned, lambda config: tune.PlacementGroupFactory(
        [{"CPU": 1, config["node"]: 1}]))
    grid = tune.Tuner(
        trainable, param_space={"top": tune.grid_search(tops), "sync": str(tmp_path),
                                "node": tune.grid_search(["head", "worker"])},
        tune_config=tune.TuneConfig(scheduler=sched, metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0,
                                  callbacks=[sched.callback])).fit()
    assert not grid.errors and len(grid) == 6
    where = {n: next(i for i, res in cluster.items() if n in res) for n in ("head", "worker")}
    for r in grid:  # each trial ran on the node holding its resource
        assert r.metrics["node_id"] == where[r.config["node"]]
        poor = r.config["top"] < 0.5
        assert r.metrics["training_iteration"] == (2 if poor else EPOCHS)
        assert r.metrics["esp/stop"] == float(poor)
    with Ledger(ledger) as led:
        runs = led.records()
    assert len(runs) == 6 and {r.hparams["node"] for r in runs} == {"head", "worker"}
    for r in runs:
        poor = r.hparams["top"] < 0.5
        assert len(r.forecasts) == r.n_epochs == (2 if poor else EPOCHS)
        assert bool(r.stopped) == poor and (not poor or "threshold" in r.stopped["reason"])
    stopped_on = {r.hparams["node"] for r in runs if r.stopped}
    assert stopped_on == {"head", "worker"}
    assert sum(model.sizes) == sum(r.n_epochs for r in runs) - 2  # none at the target epoch
    assert max(model.sizes) == (2 if batch else 1)  # both nodes' trials in one call
