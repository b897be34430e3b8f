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


def holdout_split(series: Series, extrap_fraction: float, interp_fraction: float,
                  rng: np.random.Generator) -> Holdout | None:
    """Split one series; ``None`` when it has too few points to leave a context and a target."""
    n = series.times.size
    num_tail = int(np.floor(n * extrap_fraction))
    num_context = n - num_tail
    if num_context < MIN_CONTEXT or n < MIN_CONTEXT + 1:
        return None
    interior = np.arange(1, num_context - 1)
    num_held = int(round(interior.size * interp_fraction))
    held = np.sort(rng.choice(interior, size=num_held, replace=False))
    keep = np.setdiff1d(np.arange(num_context), held)
    return Holdout(
        context=Series(series.times[keep], series.values[keep], series.id, series.extra),
        interp_times=series.times[held], interp_values=series.values[held],
        extrap_times=series.times[num_context:], extrap_values=series.values[num_context:],
    )
