"""Tiny synthetic data and configs shared by the latent-ODE tests (fast on one CPU thread)."""

from __future__ import annotations

import numpy as np

from service.model.series import Series
from training.latent_ode_config import TrainConfig


def curve(times: np.ndarray, phase: float) -> np.ndarray:
    return np.stack([np.sin(times + phase), 2 + np.cos(times + phase)], axis=1)


def sine_series(count: int, points: int, seed: int, missing: float = 0.2) -> list[Series]:
    """Two-channel sinusoids (sin, cos of t + phase) at irregular times, with missing entries.

    Lengths and time origins differ between series; every row keeps at least one channel.
    Like the spirals, each carries its clean continuation in ``extra["future_times"]`` and
    ``extra["future_values"]``.
    """
    rng = np.random.default_rng(seed)
    series = []
    for i in range(count):
        n = int(rng.integers(points // 2, points + 1))
        times = np.sort(rng.choice(np.linspace(0, 6, 4 * points), size=n, replace=False)) + rng.uniform(0, 50)
        phase = rng.uniform(0, 2 * np.pi)
        values = curve(times, phase) + 0.05 * rng.standard_normal((n, 2))
        drop = rng.random(values.shape) < missing
        drop[drop.all(axis=1), 0] = False
        values[drop] = np.nan
        future = times[-1] + np.linspace(0.2, 2.0, 6)
        series.append(Series(times, values, f"sine-{seed}-{i}",
                             extra={"future_times": future, "future_values": curve(future, phase)}))
    return series


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(latent_dim=3, encoder_hidden=8, encoder_ode_units=8, dynamics_hidden=8,
                    decoder_hidden=8, method="rk4", epochs=2, batch_size=8, val_samples=4,
                    encoder_step_size=0.25, plot_series=2, lr=2e-2)
    settings.update(overrides)
    return TrainConfig(**settings)
