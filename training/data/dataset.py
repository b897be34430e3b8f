"""The series a latent-ODE run trains on: loaded from the synthetic spirals or a CSV file,
checked before training, and fingerprinted so that ``--resume`` can tell when they changed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.model.forecaster import MAX_VALUE_SIGMAS, first_outside, value_limits
from service.model.series import Normalization, Series, constant_channels
from training.data.csv_series import LINES, load_csv
from training.data.spirals import generate_spirals
from training.holdout import can_hold_out, fewest_points_to_hold_out

if TYPE_CHECKING:
    from training.latent_ode_config import TrainConfig


@dataclass
class Dataset:
    series: list[Series]
    channels: list[str]
    time_unit: str | None
    source: str


def load_dataset(config: TrainConfig) -> Dataset:
    """The series ``config.data`` names: ``"spirals"`` (generated from the ``spirals_*`` fields and
    ``seed``) or the path of a CSV file."""
    if config.data == "spirals":
        if Path("spirals").is_file():  # which one the user meant cannot be known: ask
            raise ValueError("--data spirals means the synthetic spirals, but a file named 'spirals' is "
                             "here too: pass ./spirals to train on the file")
        series = generate_spirals(num_spirals=config.spirals_count, num_observed=config.spirals_observed,
                                  noise_std=config.spirals_noise, seed=config.seed)
        return Dataset(series, ["x", "y"], None, "spirals")
    dataset = load_csv(config.data)
    return Dataset(dataset.series, list(dataset.channels), dataset.time_unit, f"csv:{Path(config.data).name}")


# A series may span at most this many times the median series: the latent ODE is solved over a
# series' whole span, and the horizon the server allows is twice the longest span, so one series
# with a wrong time (year 0001 among 2024s) would slow training to a crawl and lift the guard.
MAX_SPAN_RATIO = 1000.0


def check_spans(series: list[Series]) -> None:
    """Refuse a series that spans more than ``MAX_SPAN_RATIO`` times the median series."""
    spans = np.array([s.times[-1] - s.times[0] for s in series])
    typical = float(np.median(spans[spans > 0])) if (spans > 0).any() else 0.0
    if typical > 0 and spans.max() > MAX_SPAN_RATIO * typical:
        odd = series[int(spans.argmax())]
        raise ValueError(f"series {odd.id!r} spans {spans.max():.4g} time units, {spans.max() / typical:.3g} "
                         f"times the median series ({typical:.4g}); more than {MAX_SPAN_RATIO:g} times is "
                         "refused: check its times (one wrong date is enough), or split it")


def fingerprint(series: list[Series]) -> str:
    """SHA-256 of the series' times and values, in order: identifies the data a model saw."""
    digest = hashlib.sha256()
    for s in series:
        digest.update(np.ascontiguousarray(s.times).tobytes())
        digest.update(np.ascontiguousarray(s.values).tobytes())
    return digest.hexdigest()


def check_series(series: list[Series], num_channels: int, where: str) -> None:
    """Every series of ``where`` (training, validation, test) has ``num_channels`` channels and
    no row without an observation (the likelihood of such a row is empty)."""
    for s in series:
        if s.num_channels != num_channels:
            raise ValueError(f"{where} series {s.id!r}: {s.num_channels} channels, expected {num_channels}")
        empty = np.flatnonzero(~s.mask.any(axis=1))
        if empty.size:
            raise ValueError(f"{where} series {s.id!r}: row {int(empty[0])} has no observed channel")


def check_channels_observed(train_series: list[Series], others: dict[str, list[Series]],
                            channels: list[str]) -> None:
    """Every channel is observed in some training series: a channel that only validation or test
    series observe cannot be learned, and its normalisation would be a made-up mean 0, std 1."""
    observed = np.any([s.mask.any(axis=0) for s in train_series], axis=0)
    for channel in np.flatnonzero(~observed):
        seen = next((f"{where} series {s.id!r}" for where, group in others.items() for s in group
                     if s.mask[:, channel].any()), "no series")
        raise ValueError(f"channel {channels[channel]!r} is observed in no training series (first in "
                         f"{seen}): drop the column, or split so that training series observe it (another "
                         "--seed splits differently)")


def check_values_covered(normalization: Normalization, groups: dict[str, list[Series]],
                         channels: list[str]) -> None:
    """Validation and test values lie within the limits a served model accepts
    (:func:`~service.model.forecaster.value_limits`): a model cannot be measured on values its
    server would refuse, and such values mean the training series do not represent that data."""
    limits = value_limits(normalization)
    mean, std = np.asarray(normalization.mean), np.asarray(normalization.std)
    for where, group in groups.items():
        for s in group:
            outside = first_outside(s.values, limits)
            if outside is not None:
                row, channel = outside
                value = s.values[row, channel]
                line = f" (CSV line {s.extra[LINES][row]})" if LINES in s.extra else ""
                raise ValueError(
                    f"{where} series {s.id!r}: channel {channels[channel]!r} is {value:.6g} at time "
                    f"{s.times[row]:.6g}{line}, {abs(value - mean[channel]) / std[channel]:.3g} training "
                    f"standard deviations from the training mean ({mean[channel]:.6g}, std "
                    f"{std[channel]:.6g}); a model reads at most {MAX_VALUE_SIGMAS:g}: check that value; if "
                    "it is right, the training series do not cover it (another --seed splits differently)")


def describe_data(source: str, channels: list[str], time_unit: str | None, groups: dict[str, list[Series]],
                  normalization: Normalization, extrap_fraction: float) -> str:
    """One line on what a run trains on, printed before it starts: a numeric column that became a
    channel, a time unit, a split or a constant channel that is not what the user meant shows
    here, not in the metrics after training."""
    times = f"times in {time_unit}" if time_unit else "times as plain numbers"
    parts = [f"data {source}: {sum(map(len, groups.values()))} series, channels "
             f"{', '.join(map(repr, channels))}, {times}; "
             + ", ".join(f"{len(group)} {where}" for where, group in groups.items())]
    for where in ("validation", "test"):
        short = sum(not can_hold_out(s.times.size, extrap_fraction) for s in groups[where])
        if short:
            parts.append(f"{short} {where} series of fewer than {fewest_points_to_hold_out(extrap_fraction)} "
                         "points, left out of the metrics")
    parts += [f"channel {channels[c]!r} is constant ({normalization.mean[c]:.6g}) in the training series: "
              "nothing to learn from it" for c in constant_channels(groups["training"])]
    return "; ".join(parts)
