"""predictor.worker: same forecasts as in-process, no statsmodels in the daemon, dies with it."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from predictor.arima import ArimaEngine, ForecastRequest
from predictor.worker import ForecastWorker, WorkerError


def request(key: str, n: int, now: float = 0.0) -> ForecastRequest:
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(0, 0.05, 400)) * 0.2 + rng.normal(0, 0.1, 400)
    return ForecastRequest(key, now, tuple(y[:n].tolist()), n, 30)


def test_worker_matches_in_process_engine() -> None:
    engine = ArimaEngine()
    with ForecastWorker(method="spawn") as worker:
        assert worker.ping() != os.getpid()
        for n, now in ((200, 0.0), (205, 300.0), (230, 900.0)):  # a fit, then two extends
            remote = worker.forecast(request("d/read_latency", n, now))
            local = engine.forecast(request("d/read_latency", n, now))
            assert remote is not None and local is not None
            assert remote.order == local.order and remote.refitted == local.refitted
            np.testing.assert_allclose(remote.mean, local.mean, rtol=1e-9)
            np.testing.assert_allclose(remote.sd, local.sd, rtol=1e-9)
        assert worker.forecast(request("short", 5)) is None
        assert worker.models() == 1
        assert worker.refit_all(6 * 3600.0) == 1
        worker.drop("d/")
        assert worker.models() == 0
    assert not worker.is_alive()
    with pytest.raises(ValueError):
        ForecastWorker(method="fork")
    with pytest.raises(WorkerError):
        ForecastWorker().forecast(request("x", 100))


def test_daemon_side_imports_no_statsmodels() -> None:
    # The mount path imports the scorer and the worker handle; neither may pull statsmodels.
    code = (
        "import sys, predictor.scorer, predictor.worker, tiers.telemetry;"
        "print('statsmodels' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_worker_exits_when_daemon_dies() -> None:
    code = (
        "import sys, time\n"
        "from predictor.worker import ForecastWorker\n"
        "w = ForecastWorker(method='spawn'); w.start(); w.ping()\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    daemon = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        worker_pid = int(daemon.stdout.readline())
        os.kill(worker_pid, 0)  # alive
        daemon.kill()  # SIGKILL: no cleanup code runs in the daemon
        daemon.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(worker_pid, 0)
            except ProcessLookupError:
                return
            # a zombie counts as gone: its parent (our dead daemon) cannot reap it
            try:
                with open(f"/proc/{worker_pid}/stat") as stat:
                    if stat.read().split()[2] == "Z":
                        return
            except FileNotFoundError:
                return
            time.sleep(0.2)
        pytest.fail(f"worker {worker_pid} outlived its daemon")
    finally:
        if daemon.poll() is None:
            daemon.kill()
