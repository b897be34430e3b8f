"""Posterior predictive forecasts from a latent-ODE checkpoint, in the user's units.

For each query series: encode its observations into q(z0); draw ``num_samples`` z0 from it;
solve the latent ODE from the first observation (t = 0) **forward** to the requested times at
or after it, and **backward** to those before it (a backcast); decode. The predictive
distribution at a requested time is the mixture over samples of N(decoder mean, obs_std^2):

- ``mean`` is the mixture mean (the average decoded mean);
- ``std`` **includes the observation noise**: sqrt(variance of the decoded means over samples +
  obs_std^2), so that intervals are calibrated for new observations, not only for the
  noiseless latent trajectory;
- ``quantiles`` are the mixture's exact quantiles (:mod:`service.model.mixture_quantile`), not
  empirical quantiles of a few draws, so they are smooth in the requested time.

A series gets the same answer alone as in a batch, and its answer at a time does not depend on
which other times are asked for, to float rounding:

- the series of a call are encoded together (:mod:`service.model.batching`), each read as its
  own sequence; an ODE-RNN encoder, whose solves step through the whole batch's time grid (which
  moved an answer by up to a fifth of its std), encodes each series alone;
- each series draws its z0 noise from its own ``torch.Generator`` seeded with ``seed``;
- each series' forward and backward latent solves are problems of their own, with their own
  adaptive steps, which neither the other series nor the other direction change
  (:func:`service.model.dopri5.dopri5_at`), and which do not stop at the requested times.

The same inputs and seed give the same answer.

What a model answers is what it was trained on (``benchmarks/forecast_calibration.py``
measures how calibrated it is there), in user time units:

- ``max_span``: the longest training series. A series' observations and the times asked after
  its first observation lie within that much of it, since every answer integrates from z0
  there: longer windows, and forecasts further out, were never scored, and came back
  confidently wrong;
- ``max_backcast``: how far before the first observation a time may lie, as far as the trainer
  scored backcasts (``backcast_fraction``); 0 for a model never trained to backcast, whose
  intervals there were far too narrow (``benchmarks/README.md``, *Calibration*).

A series that never observes a channel is answered only by a model trained to
(``unseen_channels``, the trainer's ``hide_channel_fraction``): one that always saw every
channel answered it far off, for the observed channels too.

Checkpoints from before these two hold ``max_horizon``, which their trainer set to twice the
longest training series: they answer within half of it, and never before the first observation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.model.batching import collate, union_grid
from service.model.bounds import positive_number, shown_value
from service.model.checkpoint import CheckpointError, build_and_load, json_object, load_checkpoint
from service.model.encoder import ODERNNEncoder
from service.model.latent_ode import LatentODE, LatentODEConfig
from service.model.mixture_quantile import mixture_quantiles
from service.model.series import Normalization, Series
from service.model.solver import SolverStepLimitError
from service.model.timeunits import UNITS

KIND = "latent_ode"

# An observed value further than this many training standard deviations from its channel's
# training mean is refused. The encoder saturates long before: the spirals model's forecast
# for a series scaled 1000x, or 1e12x, is much like its forecast for the series scaled 10x,
# with the same confident spread, so the answer would no longer depend on the value. So far
# out, a value is almost always a unit mistake; any plausible outlier stays well inside.
MAX_VALUE_SIGMAS = 100.0


def value_limits(normalization: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the lowest and highest value a model reads: ``MAX_VALUE_SIGMAS`` training
    standard deviations either side of the training mean."""
    mean, std = np.asarray(normalization.mean), np.asarray(normalization.std)
    return mean - MAX_VALUE_SIGMAS * std, mean + MAX_VALUE_SIGMAS * std


def first_outside(values: np.ndarray, limits: tuple[np.ndarray, np.ndarray]) -> tuple[int, int] | None:
    """(row, channel) of the first of ``values`` (n, C) outside ``limits``, if any."""
    low, high = limits
    outside = np.argwhere((values < low) | (values > high))                 # NaN (missing) is inside
    return (int(outside[0, 0]), int(outside[0, 1])) if outside.size else None


def numbers_apart(x: float, limit: float) -> tuple[str, str]:
    """``x`` and ``limit`` for a message, each to as many significant digits (6 to 17) as it
    takes to tell them apart, so that a value just over a limit is not shown as the limit. The
    limit is rounded away from ``x``, to the side that is answered: a client that sends the
    limit shown (a window of "at most 7.51715") is not refused again (7.51716 was)."""
    for digits in range(6, 18):
        shown = f"{x:.{digits}g}"
        if shown != f"{limit:.{digits}g}":
            break
    return shown, inside(limit, digits, upper=x > limit)


def inside(limit: float, digits: int, upper: bool) -> str:
    """``limit`` to ``digits`` significant digits, rounded toward the values it lets through (down
    for an ``upper`` limit): a value sent as shown is answered."""
    written = Decimal(repr(float(limit)))   # the shortest decimal that reads back as the limit
    step = Decimal(1).scaleb(written.adjusted() - digits + 1) if written else Decimal(1)
    rounded = written.quantize(step, rounding=ROUND_FLOOR if upper else ROUND_CEILING)
    return f"{float(rounded):.{digits}g}"


ANSWER_KEYS = ("max_span", "max_backcast", "unseen_channels")
# The limits are spans of the training times, which carried rounding of their own (timestamps
# divided into the model's unit): a time within a billionth of a limit is answered. Relative to
# the limit, not to the times, so times near 1e17 get no slack of 16 or more.
REACH_RTOL = 1e-9


def never_observed(values: np.ndarray) -> int | None:
    """The first channel that no row of ``values`` (n, C) observes, if any."""
    never = np.flatnonzero(np.isnan(values).all(axis=0))
    return int(never[0]) if never.size else None


def beyond_reach(first: float, at: np.ndarray, max_span: float, max_backcast: float) -> np.ndarray:
    """Which of ``at`` a model does not answer for a series whose first observation is ``first``:
    beyond ``first + max_span`` or ``first - max_backcast``, as a client computes the limits (a
    difference such as ``at - first`` can round one ulp above the limit for a time set to exactly
    it), with ``REACH_RTOL`` of slack."""
    return (at > first + max_span * (1 + REACH_RTOL)) | (at < first - max_backcast * (1 + REACH_RTOL))


def answer_limits(name: str, config: dict[str, Any]) -> tuple[float, float, bool]:
    """``max_span``, ``max_backcast`` and ``unseen_channels`` of a checkpoint's config (see the
    module docstring), or of a checkpoint from before them, which holds only ``max_horizon``."""
    if not any(key in config for key in ANSWER_KEYS) and "max_horizon" in config:
        return positive_number(f"{name}: max_horizon", config["max_horizon"]) / 2, 0.0, False
    missing = [key for key in ANSWER_KEYS if key not in config]
    if missing:
        raise ValueError(f"{name}: config.json lacks {', '.join(missing)} (a checkpoint holds all of "
                         f"{', '.join(ANSWER_KEYS)}, or, written before them, max_horizon alone)")
    span = positive_number(f"{name}: max_span", config["max_span"])
    backcast = config["max_backcast"]
    if isinstance(backcast, bool) or not (isinstance(backcast, int | float) and 0 <= backcast <= span):
        raise ValueError(f"{name}: max_backcast must be a number from 0 to max_span ({span:.6g}), got "
                         f"{shown_value(backcast)}")
    if not isinstance(config["unseen_channels"], bool):
        raise ValueError(f"{name}: unseen_channels must be true or false, got "
                         f"{shown_value(config['unseen_channels'])}")
    return span, abs(float(backcast)), config["unseen_channels"]


@dataclass
class ForecastQuery:
    times: np.ndarray
    values: np.ndarray
    at: np.ndarray


@dataclass
class SeriesForecast:
    mean: np.ndarray
    std: np.ndarray
    quantiles: dict[float, np.ndarray]
    kind: list[str]


@dataclass
class Prediction:
    forecasts: list[SeriesForecast]
    nfe: int


class Forecaster:
    """A latent-ODE model with its normalisation, channel names and time unit, ready to answer.

    Build one with :meth:`load` (from a checkpoint directory) or, in the trainer, directly from
    an in-memory model and the config that would be saved with it.
    """

    def __init__(self, model: LatentODE, config: dict[str, Any], name: str, version: str):
        self.model = model.eval()
        self.config = config
        self.name = name
        self.version = version
        self.normalization = Normalization.from_dict(config["normalization"])
        self.channels = [str(c) for c in config["channels"]]
        self.time_unit = config["time_unit"]
        # Checked here, not when a timestamp first needs it: an unknown unit made every request
        # with timestamps a 500, and an infinite horizon was listed as null (not a forecaster).
        if not (self.time_unit is None or isinstance(self.time_unit, str) and self.time_unit in UNITS):
            raise ValueError(f"{name}: time_unit must be null or one of {sorted(UNITS)}, "
                             f"got {self.time_unit!r}")
        self.max_span, self.max_backcast, self.unseen_channels = answer_limits(name, config)
        self.metrics = json_object(config["metrics"], f"{name}: metrics")
        # False: the best epoch so far of a run that was interrupted, failed or is still going (a
        # valid model, served, but listed as such); checkpoints older than the flag were finished.
        self.finished = config.get("finished", True)
        if not isinstance(self.finished, bool):
            raise ValueError(f"{name}: finished must be true or false, got {self.finished!r}")
        self._lock = threading.Lock()  # NFE counters live on the model: one prediction at a time
        sizes = (len(self.channels), model.config.num_channels, len(self.normalization.mean))
        if len(set(sizes)) != 1:
            raise ValueError(f"{name}: {sizes[0]} channel names, a {sizes[1]}-channel model and a "
                             f"{sizes[2]}-channel normalisation")
        self.value_limits = value_limits(self.normalization)

    def unseen_channel(self, values: np.ndarray) -> int | None:
        """The first channel that no row of ``values`` (n, C) observes, for a model not trained to
        answer without one (``unseen_channels``); None if there is none, or the model was."""
        return None if self.unseen_channels else never_observed(values)

    def unseen_channel_message(self, channel: int) -> str:
        return (f"channel {self.channels[channel]!r} is never observed in this series; model {self.name!r} "
                "was not trained to answer for a channel a series never observes (without one, its "
                "answers for every channel were far off): send at least one value of each channel, or "
                "use a model trained with --hide-channel-fraction")

    def value_out_of_limits(self, values: np.ndarray) -> tuple[int, int] | None:
        """(row, channel) of the first of ``values`` (n, C) outside :attr:`value_limits`, if any."""
        return first_outside(values, self.value_limits)

    def indistinct_time(self, times: np.ndarray) -> int | None:
        """Index of the first of the increasing ``times`` that the solver cannot tell apart from the
        one before it, if any: it reads a series' times relative to its first observation, in the
        model's units, in float32 (:func:`service.model.batching.collate`)."""
        model_times = self.normalization.times(times)
        with np.errstate(over="ignore"):  # a span beyond float32 is refused as too long, not warned of
            relative = (model_times - model_times[0]).astype(np.float32)
        same = np.flatnonzero(np.diff(relative) <= 0)
        return int(same[0]) + 1 if same.size else None

    def limits_message(self, value: float, channel: int) -> str:
        """Why ``value`` of ``channel`` is refused, its digits shown until they differ from the limit's."""
        low, high = self.value_limits[0][channel], self.value_limits[1][channel]
        shown, limit = numbers_apart(value, low if value < low else high)
        bounds = (f"[{limit}, {inside(high, 6, upper=True)}]" if value < low
                  else f"[{inside(low, 6, upper=False)}, {limit}]")
        return (f"{shown} is out of range: model {self.name!r} reads values of channel "
                f"{self.channels[channel]!r} within {bounds}, {MAX_VALUE_SIGMAS:g} training standard "
                "deviations either side of the training mean; check the values' units")

    def window_too_long(self, times: np.ndarray) -> bool:
        """Whether the increasing ``times`` span more than ``max_span``, compared as a client would
        compute the limit (``first + max_span``), so a window of exactly that is read."""
        return bool(times[-1] > times[0] + self.max_span * (1 + REACH_RTOL))

    def out_of_reach(self, times: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How far each of ``at`` lies from the first of the increasing ``times`` (after it or
        before it), and the indices of those the model does not answer (:func:`beyond_reach`)."""
        beyond = beyond_reach(times[0], at, self.max_span, self.max_backcast)
        return np.abs(at - times[0]), np.flatnonzero(beyond)

    def reach_message(self, distance: float, before: bool, unit: str) -> str:
        """Why a time ``distance`` before or after a series' first observation is not answered."""
        if not math.isfinite(distance):
            return (f"lies more than any float from the series' first observation; model {self.name!r} "
                    "does not answer there")
        if before and self.max_backcast == 0:
            return (f"lies {distance:.10g} {unit} before the series' first observation; model {self.name!r} "
                    "was not trained to backcast: ask for times from the first observation on")
        limit = self.max_backcast if before else self.max_span
        shown, limit = numbers_apart(distance, limit)
        if before:
            return (f"lies {shown} {unit} before the series' first observation; model {self.name!r} "
                    f"backcasts at most {limit} {unit}, as far as it was trained to: ask for later "
                    "times, or send observations from earlier on")
        return (f"lies {shown} {unit} after the series' first observation; model {self.name!r} answers "
                f"at most {limit} {unit} after it (its longest training series): send only the "
                f"observations of the last {limit} {unit} before the time asked")

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> Forecaster:
        """Load and check a checkpoint directory; any fault is a :class:`CheckpointError`."""
        directory = Path(directory)
        config, state = load_checkpoint(directory, kind=KIND)
        try:
            model_config = LatentODEConfig.from_dict(config["model"])
            model = build_and_load(lambda: LatentODE(model_config), state, str(directory))
            return cls(model, config, name or directory.name, config["weights_sha256"][:12])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise CheckpointError(f"{directory}: config.json does not describe a usable latent-ODE "
                                  f"model ({type(exc).__name__}: {exc})") from exc

    def predict(self, queries: list[ForecastQuery], quantiles: Sequence[float] = (),
                num_samples: int = 64, seed: int = 0) -> Prediction:
        """Posterior predictive at each query's ``at`` times; see the module docstring."""
        quantiles = [float(q) for q in quantiles]
        if any(not 0 < q < 1 for q in quantiles):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles}")
        if num_samples < 1:
            raise ValueError("num_samples must be at least 1")
        queries = [self._checked(i, q) for i, q in enumerate(queries)]
        if not queries:
            return Prediction([], 0)
        with self._lock, torch.inference_mode():
            self.model.reset_nfe()
            decoded = self._sample_decoded_means(queries, num_samples, seed)
            nfe = self.model.nfe
        obs_std = self.model.obs_std.detach().cpu().double().numpy()
        return Prediction([self._summarise(q, means, obs_std, quantiles)
                           for q, means in zip(queries, decoded, strict=True)], nfe)

    def _checked(self, index: int, query: ForecastQuery) -> ForecastQuery:
        where = f"queries[{index}]"
        times = np.asarray(query.times, dtype=np.float64)
        values = np.asarray(query.values, dtype=np.float64)
        at = np.asarray(query.at, dtype=np.float64)
        channels = len(self.channels)
        if times.ndim != 1 or times.size == 0:
            raise ValueError(f"{where}.times: expected a non-empty 1-D array, got shape {times.shape}")
        if not np.all(np.isfinite(times)):
            raise ValueError(f"{where}.times: contains a non-finite time")
        if times.size > 1 and not np.all(np.diff(times) > 0):
            raise ValueError(f"{where}.times: must be strictly increasing")
        if values.shape != (times.size, channels):
            raise ValueError(f"{where}.values: expected shape ({times.size}, {channels}) for channels "
                             f"{self.channels}, got {values.shape}")
        if np.isinf(values).any():
            raise ValueError(f"{where}.values: contains an infinite value")
        empty_rows = np.flatnonzero(np.isnan(values).all(axis=1))
        if empty_rows.size:
            raise ValueError(f"{where}.values: row {int(empty_rows[0])} has no observed channel")
        unseen = self.unseen_channel(values)
        if unseen is not None:
            raise ValueError(f"{where}.values: {self.unseen_channel_message(unseen)}")
        outside = self.value_out_of_limits(values)
        if outside is not None:
            row, channel = outside
            raise ValueError(f"{where}.values[{row}][{channel}]: "
                             f"{self.limits_message(values[row, channel], channel)}")
        if at.ndim != 1 or not np.all(np.isfinite(at)):
            raise ValueError(f"{where}.at: expected a 1-D array of finite times")
        if self.window_too_long(times):
            shown, limit = numbers_apart(times[-1] - times[0], self.max_span)
            raise ValueError(f"{where}.times: span {shown} time units; this model reads at most {limit}")
        distance, beyond = self.out_of_reach(times, at)
        if beyond.size:
            j = int(beyond[0])
            raise ValueError(f"{where}.at[{j}]: "
                             f"{self.reach_message(distance[j], at[j] < times[0], 'time units')}")
        return ForecastQuery(times, values, at)

    def _sample_decoded_means(self, queries: list[ForecastQuery], num_samples: int, seed: int
                              ) -> list[np.ndarray]:
        """Decoded means (m, S, C) at each query's ``at``, in normalised units.

        Each series' latent ODE is solved as two independent problems, forward from z0 to its
        requested times at or after the first observation and backward to those before it; all
        problems of the call share each field evaluation but not their steps (see
        :func:`service.model.dopri5.dopri5_at`).
        """
        norm, model = self.normalization, self.model
        device = model.log_obs_std.device
        series = [Series(norm.times(q.times), norm.values(q.values), f"queries[{i}]")
                  for i, q in enumerate(queries)]
        if isinstance(model.encoder, ODERNNEncoder):   # it steps through its batch's union grid
            posteriors = [model.posterior(collate([s]).to(device)) for s in series]
            mean, std = (torch.cat(parts) for parts in zip(*posteriors, strict=True))
        else:
            mean, std = model.posterior(collate(series).to(device))
        draws = [torch.randn(num_samples, mean.shape[-1], generator=torch.Generator().manual_seed(seed))
                 for _ in queries]
        z0 = mean[:, None] + std[:, None] * torch.stack(draws).to(device)        # (B, S, L)
        problems = []                                   # (series, its rows of `at`, index into times)
        times = []
        for b, query in enumerate(queries):
            offsets = norm.times(query.at) - norm.times(query.times[0])
            for sign, rows in ((1.0, np.flatnonzero(offsets >= 0)), (-1.0, np.flatnonzero(offsets < 0))):
                if rows.size:
                    grid, (_, index) = union_grid([np.zeros(1), offsets[rows] * sign])
                    problems.append((b, rows, index))
                    times.append(sign * grid.to(device))
        decoded = [np.zeros((q.at.size, num_samples, len(self.channels))) for q in queries]
        if not problems:
            return decoded
        starts = z0[torch.tensor([b for b, _, _ in problems], device=device)]
        try:
            paths = model.latent_states(starts, times)                         # each (T, S, L)
        except SolverStepLimitError as exc:
            exc.query = problems[exc.problem][0]
            raise
        for (b, rows, index), path in zip(problems, paths, strict=True):
            own = path[torch.as_tensor(index, device=device)]
            decoded[b][rows] = model.decoder(own).double().cpu().numpy()
        return decoded

    def _summarise(self, query: ForecastQuery, means: np.ndarray, obs_std: np.ndarray,
                   quantiles: list[float]) -> SeriesForecast:
        norm = self.normalization
        # Samples last and contiguous: numpy reduces (m, S, C) over S, with C = 1-2 innermost, in
        # strides, about 7x slower than the copy and the reduction over the last axis together
        # (0.44 -> 0.06 ms for a typical forecast, 100 times x 64 samples x 2 channels).
        samples_last = np.ascontiguousarray(means.transpose(0, 2, 1))
        mixture_mean = samples_last.mean(axis=-1)
        mixture_std = np.sqrt(samples_last.var(axis=-1) + obs_std ** 2)
        kind = ["backcast" if t < query.times[0] else "extrapolation" if t > query.times[-1]
                else "interpolation" for t in query.at]
        return SeriesForecast(
            mean=norm.unvalues(mixture_mean),
            std=norm.unscale(mixture_std),
            quantiles={q: norm.unvalues(level) for q, level in
                       zip(quantiles, mixture_quantiles(means, obs_std, quantiles), strict=True)},
            kind=kind,
        )
