"""A plot like Figure 6 of Chen et al. 2018, saved as PNG next to a checkpoint.

Drawn with matplotlib's object API (``Figure``, which renders with Agg), so no GUI backend and
no pyplot global state are involved.

One row per validation series: each channel against time (ground truth, the observations the
model saw, the held-out points, the predictive mean inside the observed window
(interpolation) and after it (extrapolation), and a 5-95 % predictive band); for two-channel
data a last panel draws the trajectory in the plane, as the paper does for spirals. The ground
truth is the clean trajectory when the data source provides one (``extra["clean_times"]``,
``extra["clean_values"]``), otherwise the series' own observations. When the source provides a
future beyond the series (``extra["future_times"]``, as the spirals do), the plot runs to its end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from service.model.forecaster import Forecaster, ForecastQuery
from training.holdout import Holdout

POINTS_PER_CURVE = 300
BAND = (0.05, 0.95)


def ground_truth(holdout: Holdout, series_end: float) -> tuple[np.ndarray, np.ndarray]:
    extra = holdout.context.extra
    if "clean_times" in extra and "clean_values" in extra:
        times, values = np.asarray(extra["clean_times"]), np.asarray(extra["clean_values"])
        start = holdout.context.times[0]
        inside = (times >= start) & (times <= series_end)
        return times[inside], values[inside]
    times = np.concatenate([holdout.context.times, holdout.interp_times, holdout.extrap_times])
    values = np.concatenate([holdout.context.values, holdout.interp_values, holdout.extrap_values])
    order = np.argsort(times)
    return times[order], values[order]


def plot_forecasts(forecaster: Forecaster, holdouts: list[Holdout], path: str | Path,
                   num_samples: int = 64, seed: int = 0) -> Path:
    """Draw ``holdouts`` (a few validation series, each within the model's ``max_span``, as
    :func:`training.latent_ode.holdouts_of` splits them) and save the figure at ``path``."""
    channels = forecaster.channels
    planar = len(channels) == 2
    columns = len(channels) + planar
    figure = Figure(figsize=(4 * columns, 3 * len(holdouts)))
    axes = figure.subplots(len(holdouts), columns, squeeze=False)
    for row, holdout in enumerate(holdouts):
        context = holdout.context
        window_end = context.times[-1]
        future = np.asarray(context.extra.get("future_times", []))
        series_end = max([window_end, *holdout.extrap_times[-1:], *future[-1:]])
        series_end = min(series_end, context.times[0] + forecaster.max_span)
        at = np.linspace(context.times[0], series_end, POINTS_PER_CURVE)
        forecast = forecaster.predict([ForecastQuery(context.times, context.values, at)], quantiles=BAND,
                                      num_samples=num_samples, seed=seed).forecasts[0]
        low, high = forecast.quantiles[BAND[0]], forecast.quantiles[BAND[1]]
        truth_times, truth_values = ground_truth(holdout, series_end)
        inside = at <= window_end
        for c, name in enumerate(channels):
            ax = axes[row, c]
            ax.plot(truth_times, truth_values[:, c], color="green", lw=1, label="ground truth")
            ax.fill_between(at, low[:, c], high[:, c], color="tab:blue", alpha=0.2, label="5-95 % band")
            ax.plot(at[inside], forecast.mean[inside, c], color="tab:blue", label="interpolation")
            ax.plot(at[~inside], forecast.mean[~inside, c], color="tab:red", label="extrapolation")
            ax.scatter(context.times, context.values[:, c], s=8, color="black", label="observed")
            ax.scatter(holdout.interp_times, holdout.interp_values[:, c], s=10, facecolors="none",
                       edgecolors="tab:purple", label="held out")
            ax.scatter(holdout.extrap_times, holdout.extrap_values[:, c], s=10, facecolors="none",
                       edgecolors="tab:orange", label="future")
            ax.set_title(f"{context.id or f'series {row}'}: {name}", fontsize=9)
        if planar:
            ax = axes[row, -1]
            ax.plot(truth_values[:, 0], truth_values[:, 1], color="green", lw=1)
            ax.plot(forecast.mean[inside, 0], forecast.mean[inside, 1], color="tab:blue")
            ax.plot(forecast.mean[~inside, 0], forecast.mean[~inside, 1], color="tab:red")
            ax.scatter(context.values[:, 0], context.values[:, 1], s=8, color="black")
            ax.set_xlabel(channels[0])
            ax.set_ylabel(channels[1])
            ax.set_title("plane", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
