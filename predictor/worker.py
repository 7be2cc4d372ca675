"""The forecast worker process: ARIMA fits off the daemon's process.

Owns starting, talking to and stopping the process that holds the ARIMA models
(predictor.arima.ArimaEngine). The daemon starts it before the mount, with multiprocessing's
'forkserver' (or 'spawn') method, so the child is a fresh interpreter that holds no
/dev/fuse or device descriptor and shares no threads with the daemon. In the child:

- OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS are set to 1 before numpy or
  statsmodels is imported (BLAS threads make these small fits 5-10x slower); they are also
  set in the environment the child is created with, since a spawned child imports its
  parent's __main__ before running our code;
- statsmodels is imported there, and only there: this module imports neither numpy nor
  statsmodels at the top, so importing it costs the daemon nothing;
- the child exits when the daemon dies: its pipe to the daemon reads EOF, and it also polls
  that its parent is alive.

`ForecastWorker.forecast(request)` has the same signature as `ArimaEngine.forecast`, so the
scorer takes either. It blocks for the round trip (~1-3 ms for an update, ~100 ms for a
refit), so the daemon calls the scorer from a thread (trio.to_thread.run_sync), never on the
trio thread. Only one thread may talk to one worker at a time (a lock enforces it).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from dataclasses import dataclass
from typing import Any

from predictor.arima import Forecast, ForecastRequest

_SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
PARENT_POLL_S = 2.0


class WorkerError(RuntimeError):
    """The worker died or answered with an error."""


@dataclass(frozen=True)
class _Call:
    method: str  # "forecast" | "refit_all" | "drop" | "ping" | "models"
    argument: Any = None


def _worker_main(connection: multiprocessing.connection.Connection, refit_every_s: float) -> None:
    """Child process entry: serve calls until the daemon goes away."""
    os.environ.update(_SINGLE_THREAD_ENV)  # before numpy: the first import reads them
    from predictor.arima import ArimaEngine

    parent = multiprocessing.parent_process()
    engine = ArimaEngine(refit_every_s=refit_every_s)
    while True:
        if not connection.poll(PARENT_POLL_S):
            if parent is not None and not parent.is_alive():
                return
            continue
        try:
            call: _Call = connection.recv()
        except (EOFError, OSError):
            return  # the daemon closed its end or died
        try:
            if call.method == "forecast":
                result: Any = engine.forecast(call.argument)
            elif call.method == "refit_all":
                result = engine.refit_all(call.argument)
            elif call.method == "drop":
                engine.drop(call.argument)
                result = None
            elif call.method == "models":
                result = len(engine)
            elif call.method == "ping":
                import statsmodels  # noqa: F401  (warm the import before the first fit)

                result = os.getpid()
            else:
                raise ValueError(f"unknown call {call.method!r}")
            reply: tuple[bool, Any] = (True, result)
        except Exception as error:  # the daemon decides; the worker keeps serving
            reply = (False, f"{type(error).__name__}: {error}")
        try:
            connection.send(reply)
        except (BrokenPipeError, OSError):
            return


class ForecastWorker:
    """A handle on the worker process; start it before mounting, close it at shutdown."""

    def __init__(self, method: str = "forkserver", refit_every_s: float = 6 * 3600.0) -> None:
        if method not in ("forkserver", "spawn"):
            raise ValueError("the worker must start with 'forkserver' or 'spawn', never 'fork'")
        self._context = multiprocessing.get_context(method)
        self._refit_every_s = refit_every_s
        self._connection: multiprocessing.connection.Connection | None = None
        self._process: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        ours, theirs = self._context.Pipe(duplex=True)
        saved = {key: os.environ.get(key) for key in _SINGLE_THREAD_ENV}
        os.environ.update(_SINGLE_THREAD_ENV)
        try:
            process = self._context.Process(  # type: ignore[attr-defined]
                target=_worker_main,
                args=(theirs, self._refit_every_s),
                name="shadowfs-forecast",
                daemon=True,
            )
            process.start()
        finally:
            # The daemon's own environment is left as it was.
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        theirs.close()  # so the child's EOF means "daemon gone", and ours means "child gone"
        self._connection, self._process = ours, process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _call(self, method: str, argument: Any = None, timeout_s: float = 120.0) -> Any:
        if self._connection is None:
            raise WorkerError("worker not started")
        with self._lock:
            try:
                self._connection.send(_Call(method, argument))
                if not self._connection.poll(timeout_s):
                    raise WorkerError(f"worker did not answer {method} within {timeout_s} s")
                ok, result = self._connection.recv()
            except (EOFError, BrokenPipeError, OSError) as error:
                raise WorkerError(f"worker died: {error}") from error
        if not ok:
            raise WorkerError(result)
        return result

    def ping(self) -> int:
        """Round trip that also imports statsmodels in the child; returns its pid."""
        return int(self._call("ping"))

    def forecast(self, request: ForecastRequest) -> Forecast | None:
        result: Forecast | None = self._call("forecast", request)
        return result

    def refit_all(self, now_s: float) -> int:
        return int(self._call("refit_all", now_s, timeout_s=600.0))

    def drop(self, key_prefix: str) -> None:
        self._call("drop", key_prefix)

    def models(self) -> int:
        return int(self._call("models"))

    def close(self, timeout_s: float = 5.0) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout_s)
            self._process = None

    def __enter__(self) -> ForecastWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
