"""How well a forecaster predicts what it was not shown: validation and test measures.

The targets come from :mod:`training.holdout` (held-out points inside the observed window and
the tail after it) and, where a data source provides one, from a clean continuation beyond each
series (``extra["future_times"]``, ``extra["future_values"]``; the spirals' Table 2 target).
Each rank measures its share of the targets and the sums are combined across ranks, so the
numbers are the same under DDP as in one process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.model.forecaster import Forecaster, ForecastQuery, beyond_reach, never_observed
from service.model.series import Series
from training import distributed
from training.holdout import MIN_CONTEXT, Holdout, recent


@dataclass
class Target:
    """What one query must predict: ``truth`` (m, C) at ``query.at`` (NaN = not observed), and
    which part of the protocol each requested time belongs to."""

    query: ForecastQuery
    truth: np.ndarray
    part: np.ndarray


def answerable(context: Series, at: np.ndarray, truth: np.ndarray, part: np.ndarray | str,
               max_span: float, unseen_channels: bool, behind: float = 0.0) -> Target | None:
    """The target as the model can be asked it: a context longer than ``max_span`` (a validation
    or test series longer than any training series) cut to its most recent ``max_span``, as the
    server tells a client to, and the times outside ``max_span`` after its first observation
    left out, as are those before its first observation but for the ``behind`` of a backcast.
    None (left out of the metrics) when the context never observes a channel and the model does
    not answer such a series (``unseen_channels``)."""
    context = recent(context, max_span)
    if not unseen_channels and never_observed(context.values) is not None:
        return None
    reachable = ~beyond_reach(context.times[0], at, max_span, behind)
    part = np.broadcast_to(np.asarray(part), at.shape)
    query = ForecastQuery(context.times, context.values, at[reachable])
    return Target(query, truth[reachable], part[reachable])


def holdout_targets(holdouts: list[Holdout], max_span: float, unseen_channels: bool) -> list[Target]:
    """Held-out points (``interp``) and tails (``extrap``), as :func:`answerable` asks them."""
    targets = [answerable(h.context, np.concatenate([h.interp_times, h.extrap_times]),
                          np.concatenate([h.interp_values, h.extrap_values]),
                          np.repeat(["interp", "extrap"], [h.interp_times.size, h.extrap_times.size]),
                          max_span, unseen_channels)
               for h in holdouts]
    return [t for t in targets if t is not None]


def future_targets(series: list[Series], max_span: float, unseen_channels: bool) -> list[Target]:
    """The clean future that a source such as the spirals provides beyond each whole series
    (``extra["future_times"]``, ``extra["future_values"]``), as :func:`answerable` asks it; none
    when it provides none."""
    targets = [answerable(s, np.asarray(s.extra["future_times"]), np.asarray(s.extra["future_values"]),
                          "future", max_span, unseen_channels)
               for s in series if "future_times" in s.extra and "future_values" in s.extra]
    return [t for t in targets if t is not None]


def backcast_targets(series: list[Series], extrap_fraction: float, max_span: float, max_backcast: float,
                     unseen_channels: bool) -> list[Target]:
    """The mirror of the extrapolation targets, for a model that backcasts (``max_backcast`` > 0):
    the first ``extrap_fraction`` of each series' points (of its most recent ``max_span``),
    asked from the rest; as far back as the model answers."""
    if max_backcast == 0:
        return []
    targets = []
    for s in series:
        s = recent(s, max_span)
        held = int(np.floor(s.times.size * extrap_fraction))
        if held < 1 or s.times.size - held < MIN_CONTEXT:
            continue
        context = Series(s.times[held:], s.values[held:], s.id)
        target = answerable(context, s.times[:held], s.values[:held], "backcast", max_span, unseen_channels,
                            behind=max_backcast)
        if target is not None:
            targets.append(target)
    return targets


INTERVAL = (0.05, 0.95)


def evaluate(forecaster: Forecaster, targets: list[Target], ctx: distributed.Context, prefix: str, *,
             batch_size: int, num_samples: int, seed: int) -> dict[str, float]:
    """Errors of the predictive mean, and coverage of the 90 % predictive interval, over this
    rank's ``targets``, all ranks combined; a part without any target on any rank is left out.

    ``{prefix}_interp_mse``, ``{prefix}_extrap_mse`` and ``{prefix}_backcast_mse`` are in
    normalised units (each channel divided by its training std, so channels weigh alike);
    ``{prefix}_future_rmse`` is in the data's own units, as Chen et al.'s Table 2 reports it.
    ``{prefix}_{part}_coverage90`` is the share of target values inside the 5-95 % interval
    (about 0.9 when calibrated against noisy targets; higher against a clean curve, since the
    interval includes observation noise).
    """
    scale = np.asarray(forecaster.normalization.std)
    totals: dict[str, np.ndarray] = {}  # part -> [normalised sq. error, sq. error, inside interval, count]
    for start in range(0, len(targets), batch_size):
        chunk = targets[start:start + batch_size]
        prediction = forecaster.predict([t.query for t in chunk], quantiles=INTERVAL, num_samples=num_samples,
                                        seed=seed)
        for target, forecast in zip(chunk, prediction.forecasts, strict=True):
            low, high = (forecast.quantiles[q] for q in INTERVAL)
            error = forecast.mean - target.truth
            inside = (low <= target.truth) & (target.truth <= high)
            per_value = np.stack([(error / scale) ** 2, error ** 2, inside, np.ones_like(error)], axis=-1)
            observed = ~np.isnan(target.truth)
            for part in np.unique(target.part):
                selected = observed & (target.part == part)[:, None]
                totals[part] = totals.get(part, np.zeros(4)) + per_value[selected].sum(axis=0)
    metrics: dict[str, float] = {}
    for part in ("interp", "extrap", "backcast", "future"):
        normalised, squared, inside, count = (distributed.all_reduce_mean(float(v), ctx)
                                              for v in totals.get(part, np.zeros(4)))
        if not count:
            continue
        if part == "future":
            metrics[f"{prefix}_future_rmse"] = math.sqrt(squared / count)
        else:
            metrics[f"{prefix}_{part}_mse"] = normalised / count
        metrics[f"{prefix}_{part}_coverage90"] = inside / count
    return metrics
