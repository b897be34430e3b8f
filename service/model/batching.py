"""Collate series with different lengths and timestamps into one batch on a shared time grid.

torchdiffeq solves a whole batch as one ODE on one time vector (torchdiffeq issue #122), so,
as Rubanova et al. do for PhysioNet, a batch is laid out on the **sorted union** of its
series' timestamps, with a mask that says which series observed which channel at which grid
time. A series simply has no observation at the grid times that belong to the others.

Each series is placed in time **relative to its own first observation**: the latent dynamics
are autonomous (time is not an input to the vector field), so shifting a series in time does
not change the model, and putting every first observation at 0 makes z0 the latent state at
that first observation for every series. ``origins`` keeps the shifts so that callers can map
requested times into the same frame.

Cost: the adaptive latent solve is driven by the time span, not by the number of grid times
(dopri5 interpolates to them), but the encoders step through every grid time, so a batch of B
series with unrelated timestamps of n points each costs them B*n steps (and the ODE-RNN a
solve per step). Series sampled on a shared clock (like the spirals) share grid times.

The input series must already be normalised (model time units, standardised values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from service.model.series import Series


@dataclass
class Batch:
    """``times`` (T,) strictly increasing, from 0 (before 0 only where :func:`collate` was given
    ``origins``); ``values``/``mask`` (B, T, C).

    Unobserved entries of ``values`` are 0 (never NaN) so that they cannot poison arithmetic;
    every use of a value goes through ``mask``.
    """

    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    origins: np.ndarray

    @property
    def observed_rows(self) -> torch.Tensor:
        """(B, T) bool: the series observed at least one channel at that grid time."""
        return self.mask.any(dim=-1)

    def to(self, device: torch.device) -> Batch:
        return Batch(self.times.to(device), self.values.to(device), self.mask.to(device), self.origins)


def union_grid(times: list[np.ndarray], dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Sorted unique union of several time vectors, and each vector's indices into it.

    Uniqueness is decided after rounding to ``dtype`` (the precision the solver works in), so
    two times that the solver could not tell apart share one grid point.
    """
    rounded = [torch.as_tensor(np.asarray(t, dtype=np.float64)).to(dtype) for t in times]
    grid = torch.unique(torch.cat(rounded)) if rounded else torch.zeros(0, dtype=dtype)
    indices = [torch.searchsorted(grid, r).numpy() for r in rounded]
    return grid, indices


def collate(series: list[Series], dtype: torch.dtype = torch.float32,
            origins: np.ndarray | None = None) -> Batch:
    """Lay normalised series out on the sorted union of their times, each shifted so that its
    first observation is at 0, or its entry of ``origins`` when given: the trainer places a series
    relative to the first point its encoder read, so that points before it are backcasts (at
    negative times)."""
    if not series:
        raise ValueError("cannot collate an empty list of series")
    channels = series[0].num_channels
    for s in series:
        if s.times.size == 0:
            raise ValueError(f"series {s.id!r} has no observations")
        if s.num_channels != channels:
            raise ValueError(f"series {s.id!r} has {s.num_channels} channels, expected {channels}")
    if origins is None:
        origins = np.array([s.times[0] for s in series])
    grid, indices = union_grid([s.times - origin for s, origin in zip(series, origins, strict=True)], dtype)
    values = torch.zeros(len(series), grid.numel(), channels, dtype=dtype)
    mask = torch.zeros(len(series), grid.numel(), channels, dtype=torch.bool)
    for row, (s, index) in enumerate(zip(series, indices, strict=True)):
        if np.unique(index).size != index.size:
            raise ValueError(f"series {s.id!r} has observations closer in time than the solver's "
                             f"{dtype} precision can separate")
        observed = torch.from_numpy(s.mask)
        values[row, index] = torch.from_numpy(np.nan_to_num(s.values, nan=0.0)).to(dtype)
        mask[row, index] = observed
    return Batch(grid, values, mask, origins)
