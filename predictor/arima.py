"""ARIMA forecasts per signal on 1-minute aggregates (statsmodels).

Owns the fitted models, keyed by "device/signal". A request carries the signal's recent
1-minute history and how many aggregates the signal has produced in all; the engine

- fits when it has no model, or when the model is older than `refit_every_s` (6 h): every
  order of a small grid, keeping the lowest AIC (all orders share d=1, so their AICs are
  comparable: they are likelihoods of the same differenced series);
- otherwise updates the fitted model with only the observations it has not seen, through
  `results.extend` (parameters kept, state filtered forward: ~1 ms instead of ~30 ms);
- returns the h-step forecast mean and standard deviation for h = 1..steps.

statsmodels is imported lazily, on the first fit: in the daemon this engine lives in the
worker process (predictor/worker.py), so the mount never waits on that import. Set
OPENBLAS_NUM_THREADS=1 before numpy is imported (the worker does): BLAS threads make these
small fits 5-10x slower.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

DEFAULT_GRID: tuple[tuple[int, int, int], ...] = ((0, 1, 1), (1, 1, 0), (1, 1, 1))
REFIT_EVERY_S = 6 * 3600.0
MIN_POINTS = 30


@dataclass(frozen=True)
class ForecastRequest:
    key: str  # "device/signal"
    now_s: float
    history: tuple[float, ...]  # the newest 1-minute aggregates, oldest first (no NaN)
    n_total: int  # aggregates this signal has produced since the scorer started
    steps: int  # forecast horizon in minutes


@dataclass(frozen=True)
class Forecast:
    key: str
    mean: tuple[float, ...]
    sd: tuple[float, ...]
    order: tuple[int, int, int]
    aic: float
    fitted_at_s: float
    refitted: bool  # this request triggered an order selection
    cpu_s: float  # process CPU this request cost


@dataclass
class _Model:
    results: Any  # statsmodels ARIMAResults (or the result of its .extend)
    order: tuple[int, int, int]
    aic: float
    fitted_at_s: float
    n_total: int
    history: tuple[float, ...]  # kept so `refit_all` can re-select without a new request


def fit_best(
    history: tuple[float, ...], grid: tuple[tuple[int, int, int], ...]
) -> tuple[Any, tuple[int, int, int], float]:
    """Fit every order in `grid` and keep the lowest AIC."""
    import numpy as np
    from statsmodels.tsa.arima.model import ARIMA

    y = np.asarray(history, dtype=np.float64)
    best: tuple[Any, tuple[int, int, int], float] | None = None
    for order in grid:
        with warnings.catch_warnings():
            # Short or flat series warn about convergence; the AIC still ranks them.
            warnings.simplefilter("ignore")
            try:
                results = ARIMA(y, order=order).fit()
            except (ValueError, np.linalg.LinAlgError):
                continue
        aic = float(results.aic)
        if math.isfinite(aic) and (best is None or aic < best[2]):
            best = (results, order, aic)
    if best is None:
        raise ValueError("no ARIMA order could be fitted")
    return best


@dataclass
class ArimaEngine:
    grid: tuple[tuple[int, int, int], ...] = DEFAULT_GRID
    refit_every_s: float = REFIT_EVERY_S
    _models: dict[str, _Model] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._models)

    def forecast(self, request: ForecastRequest) -> Forecast | None:
        """The forecast for `request`, fitting or updating its model first; None if too short."""
        started = time.process_time()
        if len(request.history) < MIN_POINTS:
            return None
        model = self._models.get(request.key)
        refitted = False
        new = request.n_total - model.n_total if model is not None else 0
        if (
            model is None
            or request.now_s - model.fitted_at_s >= self.refit_every_s
            or new > len(request.history)  # a gap we cannot fill: start afresh
        ):
            try:
                results, order, aic = fit_best(request.history, self.grid)
            except ValueError:
                return None
            model = _Model(results, order, aic, request.now_s, request.n_total, request.history)
            self._models[request.key] = model
            refitted = True
        elif new > 0:
            import numpy as np

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.results = model.results.extend(
                    np.asarray(request.history[-new:], dtype=np.float64)
                )
            model.n_total = request.n_total
            model.history = request.history
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prediction = model.results.get_forecast(request.steps)
            mean = [float(v) for v in prediction.predicted_mean]
            sd = [math.sqrt(max(float(v), 0.0)) for v in prediction.var_pred_mean]
        return Forecast(
            key=request.key,
            mean=tuple(mean),
            sd=tuple(sd),
            order=model.order,
            aic=model.aic,
            fitted_at_s=model.fitted_at_s,
            refitted=refitted,
            cpu_s=time.process_time() - started,
        )

    def refit_all(self, now_s: float) -> int:
        """Re-select and refit every model now (the 6-hourly job, forced); returns the count."""
        for model in self._models.values():
            results, order, aic = fit_best(model.history, self.grid)
            model.results, model.order, model.aic = results, order, aic
            model.fitted_at_s = now_s
        return len(self._models)

    def drop(self, key_prefix: str) -> None:
        """Forget the models of a device (removed from the config, or evacuated)."""
        for key in [k for k in self._models if k.startswith(key_prefix)]:
            del self._models[key]
