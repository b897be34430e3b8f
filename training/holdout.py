"""Split a series into what a forecaster sees and what it must predict, for validation.

The last ``extrap_fraction`` of a series' observations form the **extrapolation** targets
(the future after the observed window). Of the rest, a random ``interp_fraction`` of the
interior points (never the first or the last, so that each lies strictly inside the window the
model sees) are the **interpolation** targets. What remains is the context given to the
encoder. This works for any source (spirals, CSV), any number of channels and any spacing;
it is the validation protocol of Rubanova et al. (section 4: interpolation and extrapolation)
folded into one split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.model.series import Series

MIN_CONTEXT = 2


@dataclass
class Holdout:
    context: Series
    interp_times: np.ndarray
    interp_values: np.ndarray
    extrap_times: np.ndarray
    extrap_values: np.ndarray


def can_hold_out(num_points: int, extrap_fraction: float) -> bool:
    """Whether a series of ``num_points`` leaves both a context and a target to predict."""
    num_context = num_points - int(np.floor(num_points * extrap_fraction))
    return num_context >= MIN_CONTEXT and num_points >= MIN_CONTEXT + 1


def fewest_points_to_hold_out(extrap_fraction: float) -> int:
    """The shortest series :func:`can_hold_out` (3 at the default ``extrap_fraction`` 0.5).

    The context keeps ``MIN_CONTEXT`` points once ``n (1 - extrap_fraction) > 1``; the search
    starts just below that bound, so it takes a few steps for any fraction below 1.
    """
    num_points = max(MIN_CONTEXT + 1, int(1 / (1 - extrap_fraction)) - 1)
    while not can_hold_out(num_points, extrap_fraction):
        num_points += 1
    return num_points


def check_validation_holds_out(val_series: list[Series], all_series: list[Series],
                               extrap_fraction: float) -> None:
    """Some validation series is long enough to measure a model on; the error says how many of
    all the series are, and how to get one into validation."""
    if any(can_hold_out(s.times.size, extrap_fraction) for s in val_series):
        return
    need = fewest_points_to_hold_out(extrap_fraction)
    long_enough = sum(can_hold_out(s.times.size, extrap_fraction) for s in all_series)
    fix = (f"{long_enough} of all {len(all_series)} series are: another --seed or a larger --val-fraction "
           "puts some in validation" if long_enough else
           f"none of all {len(all_series)} series is: give longer series")
    raise ValueError(f"no validation series is long enough to hold points out (with extrap_fraction "
                     f"{extrap_fraction:g}, {need} points or more): the longest of the {len(val_series)} "
                     f"validation series has {max(s.times.size for s in val_series)}; {fix}")


def holdout_split(series: Series, extrap_fraction: float, interp_fraction: float,
                  rng: np.random.Generator) -> Holdout | None:
    """Split one series; ``None`` when it has too few points to leave a context and a target."""
    n = series.times.size
    if not can_hold_out(n, extrap_fraction):
        return None
    num_context = n - int(np.floor(n * extrap_fraction))
    interior = np.arange(1, num_context - 1)
    num_held = int(round(interior.size * interp_fraction))
    held = np.sort(rng.choice(interior, size=num_held, replace=False))
    keep = np.setdiff1d(np.arange(num_context), held)
    return Holdout(
        context=Series(series.times[keep], series.values[keep], series.id, series.extra),
        interp_times=series.times[held], interp_values=series.values[held],
        extrap_times=series.times[num_context:], extrap_values=series.values[num_context:],
    )


def recent(series: Series, span: float) -> Series:
    """The observations within ``span`` of the series' last one: what a model that reads windows
    of at most ``span`` is asked with, as the server tells a client to send."""
    kept = series.times >= series.times[-1] - span
    return Series(series.times[kept], series.values[kept], series.id, series.extra)
