"""Bi-directional 2-D spirals, irregularly observed: the data of Chen et al. 2018, Table 2.

The curves are those of torchdiffeq's ``examples/latent_ode.py: generate_spiral2d`` with the
settings that example actually runs: ``ntotal=500`` grid points on ``t in [0, 6*pi]``, ``a=0``,
``b=0.3``. Counter-clockwise: ``r = a + b*t``, angle ``t``, centre (+5, 0). Clockwise: angle
``z = 6*pi + 1 - t``, ``r = a + 50*b/z``, centre (-5, 0). Both spiral outwards as t grows.

Protocol (Table 2: "n in {30, 50, 100} points sampled without replacement from each
trajectory", "RMSE on 100 time points extending beyond"); choices the paper leaves open are
marked *choice*:

- Exactly half the spirals run clockwise, half counter-clockwise, in shuffled order (the paper
  says half; the example flips a coin per spiral).
- Each spiral is a window of 100 consecutive grid steps. *Choice:* its start is uniform over
  grid indices ``[0, ntotal - 200]``, so that the 100 steps after the window also lie on the
  grid. (The example draws starts from [100, 400) and has no future; its clockwise radius
  ``50*b/z`` diverges at ``t = 6*pi + 1``, so the grid cannot simply be extended.)
- Each spiral is observed at its own ``num_observed`` of the window's 100 steps, drawn without
  replacement and sorted: sampling is irregular and differs between series.
- Observations carry i.i.d. Gaussian noise. *Choice:* ``noise_std`` defaults to 0.3, the value
  the example runs with (the paper gives none).
- The extrapolation targets are the **clean** trajectory at the 100 grid steps after the window
  (``extra["future_values"]``). *Choice, and why:* against noisy targets at std 0.3 the RMSE of
  even a perfect forecaster would be about 0.3, above every latent-ODE number in Table 2
  (0.13-0.16), so those numbers only make sense against the clean curve (or at a much lower,
  unstated noise). RMSE against the clean curve measures the forecast, not the noise.
- Every spiral is also observed, the same way (``num_observed`` of the ``horizon`` steps, same
  noise), over the steps after its window: ``extra["future_observed"]``. *Choice, and why:* a
  forecaster learns from histories that run on past the point where a forecast starts, so the
  training and validation spirals are those observations through their future
  (:func:`through_future`), while a test spiral shows only its window and is scored on its
  clean future. Trained on windows alone, nothing shows grid steps 400-499 (no window reaches
  past step 399), yet 39 % of test futures run there, and for clockwise spirals that stretch is
  the sweep from radius 3 to 15: a model can only guess it.
- Times count from the window's first grid step (``t = 0``; the first observation may come
  later), in the curve's own time units: one grid step is ``6*pi/499`` (about 0.0378), so a
  window spans about 3.74 and the future about 3.78 more.

Everything is drawn from one ``numpy.random.default_rng(seed)``: same arguments, same spirals.
"""

from __future__ import annotations

import numpy as np

from service.model.series import Series
from training.data.splits import split_by_series

CHANNELS = ("x", "y")
DIRECTIONS = ("cw", "ccw")


def spiral_curves(ntotal: int = 500, stop: float = 6 * np.pi, a: float = 0.0,
                  b: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """The grid times (ntotal,) and both clean curves (2, ntotal, 2), clockwise first."""
    times = np.linspace(0.0, stop, ntotal)
    angle_cw = stop + 1.0 - times
    radius_cw = a + b * 50.0 / angle_cw
    clockwise = np.stack([radius_cw * np.cos(angle_cw) - 5.0, radius_cw * np.sin(angle_cw)], axis=-1)
    radius_ccw = a + b * times
    counter = np.stack([radius_ccw * np.cos(times) + 5.0, radius_ccw * np.sin(times)], axis=-1)
    return times, np.stack([clockwise, counter])


def observed_steps(rng: np.random.Generator, num_spirals: int, length: int, count: int) -> np.ndarray:
    """For each spiral, ``count`` of ``length`` steps drawn without replacement, sorted: (N, count)."""
    return np.sort(np.argsort(rng.random((num_spirals, length)), axis=1)[:, :count], axis=1)


def generate_spirals(num_spirals: int, num_observed: int, noise_std: float = 0.3, seed: int = 0, *,
                     window: int = 100, horizon: int = 100, ntotal: int = 500,
                     stop: float = 6 * np.pi, a: float = 0.0, b: float = 0.3) -> list[Series]:
    """``num_spirals`` noisy spirals, each observed at ``num_observed`` of its ``window`` steps.

    Each Series has channels ("x", "y") and in ``extra``: ``future_times`` (horizon,),
    ``future_values`` (horizon, 2) the clean curve after the window; ``future_observed``, a
    Series of noisy observations after the window, drawn as the window's; ``clean_times`` (ntotal,),
    ``clean_values`` (ntotal, 2) the whole clean curve on the same clock; ``direction``.
    """
    if num_spirals < 1:
        raise ValueError(f"num_spirals must be at least 1, got {num_spirals}")
    if not 1 <= num_observed <= window:
        raise ValueError(f"num_observed must lie in [1, window={window}], got {num_observed}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    if ntotal < window + horizon:
        raise ValueError(f"ntotal={ntotal} leaves no room for window={window} plus horizon={horizon}")

    grid_times, curves = spiral_curves(ntotal, stop, a, b)
    step = grid_times[1] - grid_times[0]
    rng = np.random.default_rng(seed)
    direction = rng.permutation(np.arange(num_spirals) % 2)
    start = rng.integers(0, ntotal - window - horizon + 1, size=num_spirals)
    observed = observed_steps(rng, num_spirals, window, num_observed)

    clean = curves[direction]                                    # (N, ntotal, 2)
    rows = np.arange(num_spirals)[:, None]
    values = clean[rows, start[:, None] + observed]
    values = values + noise_std * rng.standard_normal(values.shape)
    future_steps = window + np.arange(horizon)
    future_values = clean[rows, start[:, None] + future_steps]
    clean_times = (np.arange(ntotal)[None, :] - start[:, None]) * step
    # Drawn after everything above, so the windows and their observations do not depend on it.
    future_count = min(num_observed, horizon)
    future_observed = window + observed_steps(rng, num_spirals, horizon, future_count)
    future_observed_values = clean[rows, start[:, None] + future_observed]
    future_observed_values += noise_std * rng.standard_normal(future_observed_values.shape)

    return [
        Series(observed[i] * step, values[i], id=f"spiral-{i}", extra={
            "future_times": future_steps * step,
            "future_values": future_values[i],
            "future_observed": Series(future_observed[i] * step, future_observed_values[i]),
            "clean_times": clean_times[i],
            "clean_values": clean[i],
            "direction": DIRECTIONS[direction[i]],
        })
        for i in range(num_spirals)
    ]


def through_future(spiral: Series) -> Series:
    """The spiral observed through its window and the steps after it: a history to learn from.

    Its ``extra`` keeps only the whole clean curve, since what was the future is now observed.
    """
    future = spiral.extra["future_observed"]
    kept = {key: spiral.extra[key] for key in ("clean_times", "clean_values", "direction")}
    return Series(np.concatenate([spiral.times, future.times]),
                  np.concatenate([spiral.values, future.values]), spiral.id, kept)


def split_spirals(spirals: list[Series], val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[list[Series], list[Series], list[Series]]:
    """Split by spiral (:func:`~training.data.splits.split_by_series`); the training and validation
    spirals are observed :func:`through_future`, the test spirals over their window only."""
    train, val, test = split_by_series(spirals, val_fraction, test_fraction, seed)
    return [through_future(s) for s in train], [through_future(s) for s in val], test
