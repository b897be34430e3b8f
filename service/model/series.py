"""Irregularly sampled series, and the normalisation that maps them into model units.

A :class:`Series` is what every data source (spiral generator, CSV file, API request) produces:
its own timestamps, one row of channel values per timestamp, NaN where a channel was not
observed. :class:`Normalization` is fitted on the training split and stored in the checkpoint,
so the server takes and returns times and values in the user's own units.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.model.bounds import positive_number


@dataclass
class Series:
    """One series: ``times`` (n,) strictly increasing; ``values`` (n, C) with NaN = missing."""

    times: np.ndarray
    values: np.ndarray
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        if self.times.ndim != 1 or self.values.shape[0] != self.times.shape[0]:
            raise ValueError(f"series {self.id!r}: {self.times.shape[0]} times but "
                             f"{self.values.shape[0]} rows of values")
        if self.times.size and not np.all(np.diff(self.times) > 0):
            raise ValueError(f"series {self.id!r}: times must be strictly increasing")

    @property
    def mask(self) -> np.ndarray:
        return ~np.isnan(self.values)

    @property
    def num_channels(self) -> int:
        return self.values.shape[1]


@dataclass(frozen=True)
class Normalization:
    """``model_time = time / time_scale``; ``model_value = (value - mean) / std`` per channel.

    Only the time *scale* is normalised: the latent dynamics are autonomous and every series
    is solved in time relative to its own first observation, so no time origin is needed.
    """

    time_scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, series: list[Series], time_span: float = 1.0) -> Normalization:
        """Scale times so the median series spans ``time_span``; standardise each channel.

        Statistics use observed entries only. A channel that varies keeps its own std, however
        small its values (data in farads spread by 1e-13). A constant channel
        (:func:`constant_channels`) cannot be standardised: its scale is its magnitude ``|mean|``
        (1 where that is 0), so the values a served model reads (``mean`` +- 100 scales) stay in
        the data's units. A channel never observed gets mean 0, std 1.
        """
        spans = [s.times[-1] - s.times[0] for s in series if s.times.size > 1]
        median_span = float(np.median(spans)) if spans else 0.0
        time_scale = median_span / time_span if median_span > 0 else 1.0
        mean, std = _channel_statistics(series)
        constant = _is_constant(mean, std)
        magnitude = np.where(np.abs(mean) > 0, np.abs(mean), 1.0)
        std = np.where(constant, magnitude, np.where(np.isfinite(std), std, 1.0))
        mean = np.where(np.isfinite(mean), mean, 0.0)
        return cls(time_scale, tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def times(self, times: np.ndarray) -> np.ndarray:
        return np.asarray(times, dtype=np.float64) / self.time_scale

    def values(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)

    def unvalues(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values) * np.asarray(self.std) + np.asarray(self.mean)

    def unscale(self, spread: np.ndarray) -> np.ndarray:
        """Map a standard deviation (not a value) back to user units."""
        return np.asarray(spread) * np.asarray(self.std)

    def to_dict(self) -> dict[str, Any]:
        return {"time_scale": self.time_scale, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        try:
            norm = cls(float(data["time_scale"]), tuple(map(float, data["mean"])),
                       tuple(map(float, data["std"])))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"malformed normalization {data!r}: {exc}") from exc
        if len(norm.mean) != len(norm.std):
            raise ValueError(f"normalization has {len(norm.mean)} means but {len(norm.std)} "
                             "standard deviations")
        # Finite, not only positive: NaN passes a `<= 0` test, and a NaN std or time scale then
        # failed every request (a 500, or "times must be strictly increasing" blamed on the client).
        positive_number("normalization.time_scale", norm.time_scale)
        for channel, (mean, std) in enumerate(zip(norm.mean, norm.std, strict=True)):
            if not math.isfinite(mean):
                raise ValueError(f"normalization.mean[{channel}] must be finite, got {mean!r}")
            positive_number(f"normalization.std[{channel}]", std)
        return norm


# A channel whose std is at most this many float64 steps (ulps) of its mean is constant.
# Identical values give a std of exactly 0 here (they are divided by their own magnitude first);
# values that differ only by float rounding (0.3 and 0.1 + 0.2 = 0.30000000000000004) give under
# one step. Their std as a scale would make a served model refuse any value a few steps from the
# mean. A channel that varies by more than float64 can barely tell apart (3e-13 +- 7e-14;
# 1.7e9 +- 0.5; 1e15 +- 5, where a step is 0.125) keeps its own std.
CONSTANT_STEPS = 4
# A served model reads values up to 100 stds from the mean and works on them in float64: the
# statistics of values near the float's limit (1e300) leave it no room.
_HEADROOM = 1e3


def _channel_statistics(series: list[Series]) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the mean and std of the observed entries (NaN for a channel never observed).

    They are computed on the values divided by their largest magnitude, then scaled back: the
    squares of values below 1e-154 underflow to 0 (a varying channel read as constant) and those
    of values above 1e154 overflow."""
    values = np.concatenate([s.values for s in series], axis=0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel never observed: all NaN
        peak = np.nanmax(np.abs(values), axis=0)
        scale = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
        mean = np.nanmean(values / scale, axis=0) * scale
        std = np.nanstd(values / scale, axis=0) * scale
        overflowed = np.flatnonzero(np.isinf(np.abs(mean) + _HEADROOM * std))
    if overflowed.size:  # not a channel without observations (NaN): values such as 1e300
        raise ValueError(f"channel {int(overflowed[0])}: its values are too large to standardise (their "
                         "mean or std is too near a float's limit); check for values such as 1e300")
    return mean, std


def _is_constant(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # a channel never observed: NaN, not constant
        return np.isfinite(std) & (std <= CONSTANT_STEPS * np.spacing(np.abs(mean)))


def constant_channels(series: list[Series]) -> list[int]:
    """The channels :meth:`Normalization.fit` finds constant in ``series`` and scales by their
    magnitude: a trainer reports them, since such a channel teaches a model nothing."""
    return [int(c) for c in np.flatnonzero(_is_constant(*_channel_statistics(series)))]
