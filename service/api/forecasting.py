"""POST /forecast's work: checks that need the model or the limits, the call, the answer.

Every refusal is an :class:`ApiError` naming the field at fault (``series[2].at[7]``), raised
before any torch work, so a bad request costs microseconds and never reaches the solver.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from service.api.errors import ApiError, Loc, field_path, shown
from service.api.metrics import Metrics, timed
from service.api.registry import ModelEntry
from service.api.schemas.forecast import ForecastRequest, SeriesIn
from service.api.settings import Settings
from service.model.forecaster import Forecaster, ForecastQuery, numbers_apart
from service.model.solver import SolverStepLimitError
from service.model.timeunits import parse_datetime, parse_timestamp, posix_seconds, to_unit


def _invalid(loc: Loc, msg: str, type: str) -> ApiError:
    return ApiError(422, loc, msg, type)


def _over_limit(loc: Loc, what: str, count: int, setting: str, limit: int) -> ApiError:
    return _invalid(loc, f"{shown(count)} {what}; the limit is {limit} (setting ODECAST_{setting.upper()})",
                    "over_limit")


class ZoneKind:
    """Whether a series' timestamps carry a time zone: one kind throughout its ``times`` and
    ``at``, as the trainer insists for a CSV file. Mixed, a timestamp without a zone would be
    read as UTC beside ones in other zones, which is seldom what the client meant."""

    def __init__(self) -> None:
        self.first: tuple[Loc, str, bool] | None = None   # where, what, zoned

    def check(self, moment: datetime, loc: Loc, text: str) -> None:
        zoned = moment.tzinfo is not None
        if self.first is None:
            self.first = (loc, text, zoned)
        elif zoned != self.first[2]:
            where, first_text, _ = self.first
            kinds = ("a timestamp with a time zone", "a timestamp without one")
            raise _invalid(loc, f"{shown(text)} is {kinds[not zoned]}, but {field_path(where)} "
                                f"({shown(first_text)}) is {kinds[zoned]}: use one kind throughout a series "
                                "(one without a zone is read as UTC)", "timestamp_zone_mixed")


def time_numbers(points: Sequence[float | str], model: Forecaster, loc: Loc, zone: ZoneKind) -> np.ndarray:
    """The model's plain-number times for ``points`` (numbers, or ISO-8601 for a timestamp model)."""
    if model.time_unit is None:
        for j, point in enumerate(points):
            if isinstance(point, str):
                raise _invalid((*loc, j), f"model {model.name!r} takes numeric times, got the string "
                                          f"{shown(point)}", "time_type")
        try:
            return np.asarray(points, dtype=np.float64)
        except OverflowError:  # an integer beyond any float (JSON allows 10**400)
            j = next(j for j, point in enumerate(points) if abs(point) > sys.float_info.max)
            raise _invalid((*loc, j), f"{shown(points[j])} is too large: a time must be a finite number "
                                      "(at most about 1.8e308 in size)", "finite_number") from None
    seconds = np.empty(len(points))
    for j, point in enumerate(points):
        if not isinstance(point, str):
            raise _invalid((*loc, j), f"model {model.name!r} was trained on timestamps: send ISO-8601 "
                                      f"strings such as '2024-03-01T12:00:00Z', not {shown(point)}",
                           "time_type")
        try:
            moment = parse_datetime(point)
        except ValueError:
            raise _invalid((*loc, j), f"{shown(point)} is not an ISO-8601 timestamp (expected e.g. "
                                      "2024-03-01T12:00:00Z)", "timestamp_invalid") from None
        zone.check(moment, (*loc, j), point)
        seconds[j] = posix_seconds(moment)
    return to_unit(seconds, model.time_unit)


def _repeat_message(sent: Sequence[float | str], first: int, second: int, model: Forecaster) -> str:
    """Why times[second] repeats times[first], which it may do without being the same text."""
    once = "each time may be observed once"
    if sent[second] == sent[first]:
        return f"time {shown(sent[second])} repeats times[{first}]; {once}"
    if model.time_unit is not None:
        step = float(np.spacing(abs(parse_timestamp(str(sent[second])))))
        resolution = ("microseconds" if step <= 1e-6 else
                      f"{step * 1e6:.2g} microseconds this far from 1970 (float64 seconds)")
        return (f"time {shown(sent[second])} repeats times[{first}] ({shown(sent[first])}): timestamps are "
                f"resolved to {resolution}; {once}")
    return (f"time {shown(sent[second])} is equal to times[{first}] ({shown(sent[first])}) at float64 "
            f"precision, which times are read in; {once}")


def build_query(series: SeriesIn, model: Forecaster, settings: Settings, loc: Loc) -> ForecastQuery:
    """One series as a :class:`ForecastQuery`: sorted by time, every check done (its counts, by
    :func:`check_request`)."""
    if len(series.values) != len(series.times):
        raise _invalid((*loc, "values"), f"{len(series.values)} rows of values for {len(series.times)} "
                                         "times; give one row per time", "length_mismatch")
    channels = len(model.channels)
    for j, row in enumerate(series.values):
        if len(row) != channels:
            names = ", ".join(model.channels)
            message = (f"{len(row)} value{'s' * (len(row) != 1)}; model {model.name!r} has {channels} "
                       f"channel{'s' * (channels != 1)} ({names}): give one row of {channels} per time")
            if len(row) == 1:
                message += " (a flat list of numbers is for one-channel models)"
            raise _invalid((*loc, "values", j), message, "channel_count")
    values = np.array(series.values, dtype=np.float64).reshape(len(series.values), channels)
    empty = np.flatnonzero(np.isnan(values).all(axis=1))
    if empty.size:
        raise _invalid((*loc, "values", int(empty[0])), "every channel is missing; a row needs at least "
                                                        "one value", "empty_row")
    unseen = model.unseen_channel(values)
    if unseen is not None:
        raise _invalid((*loc, "values"), model.unseen_channel_message(unseen), "channel_never_observed")
    outside = model.value_out_of_limits(values)
    if outside is not None:
        row, channel = outside
        raise _invalid((*loc, "values", row, channel), model.limits_message(values[row, channel], channel),
                       "value_out_of_range")
    zone = ZoneKind()
    times = time_numbers(series.times, model, (*loc, "times"), zone)
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    repeats = np.flatnonzero(np.diff(times) == 0)
    if repeats.size:
        first, second = sorted((int(order[repeats[0]]), int(order[repeats[0] + 1])))
        raise _invalid((*loc, "times", second), _repeat_message(series.times, first, second, model),
                       "duplicate_time")
    indistinct = model.indistinct_time(times)
    if indistinct is not None:
        first, second = sorted((int(order[indistinct - 1]), int(order[indistinct])))
        raise _invalid((*loc, "times", second), f"time {shown(series.times[second])} cannot be told apart "
                       f"from times[{first}] ({shown(series.times[first])}) by model {model.name!r}, which "
                       "reads times in float32 relative to the first observation", "indistinct_time")
    span = times[-1] - times[0]
    if model.window_too_long(times):
        unit = model.time_unit or "time units"
        shown_span, limit = _amounts(span, model.max_span)
        message = (f"the observations span {shown_span} {unit}; model {model.name!r} reads windows of "
                   f"at most {limit} {unit} (its longest training series): send the most recent part")
        raise _invalid((*loc, "times"), message, "window_too_long")
    at = time_numbers(series.at, model, (*loc, "at"), zone)
    _check_reach(at, times, series.at, model, (*loc, "at"))
    return ForecastQuery(times=times, values=values, at=at)


def _amounts(distance: float, limit: float) -> tuple[str, str]:
    """A distance and its limit for a message: with the digits that tell them apart, and a span
    that overflowed a float says so."""
    if not math.isfinite(distance):
        return "more than any float", f"{limit:g}"
    return numbers_apart(distance, limit)


def _check_reach(at: np.ndarray, times: np.ndarray, sent: Sequence[float | str], model: Forecaster,
                 loc: Loc) -> None:
    distance, beyond = model.out_of_reach(times, at)
    if beyond.size:
        j = int(beyond[0])
        message = model.reach_message(distance[j], at[j] < times[0], model.time_unit or "time units")
        raise _invalid((*loc, j), f"{shown(sent[j])} {message}", "beyond_horizon")


def check_request(request: ForecastRequest, settings: Settings, channels: int) -> None:
    """Limits and rules on the request as a whole, for a model of ``channels`` channels."""
    if len(request.series) > settings.max_series:
        raise _over_limit(("body", "series"), "series", len(request.series), "max_series",
                          settings.max_series)
    if request.num_samples > settings.max_samples:
        raise _over_limit(("body", "num_samples"), "samples", request.num_samples, "max_samples",
                          settings.max_samples)
    if len(request.quantiles) > settings.max_quantiles:
        raise _over_limit(("body", "quantiles"), "quantiles", len(request.quantiles), "max_quantiles",
                          settings.max_quantiles)
    for j, level in enumerate(request.quantiles):
        if level in request.quantiles[:j]:
            raise _invalid(("body", "quantiles", j), f"{level} is asked for twice", "duplicate_quantile")
    for i, series in enumerate(request.series):  # before the totals below, which they bound
        loc = ("body", "series", i)
        if len(series.times) > settings.max_observations:
            raise _over_limit((*loc, "times"), "observations", len(series.times), "max_observations",
                              settings.max_observations)
        if len(series.at) > settings.max_times:
            raise _over_limit((*loc, "at"), "requested times", len(series.at), "max_times",
                              settings.max_times)
    times = sum(len(series.at) for series in request.series)
    points = request.num_samples * times
    if points > settings.max_sample_points:
        raise _invalid(("body", "num_samples"), f"{request.num_samples} samples at {times} requested times "
                       f"make {points} sample points; the limit is {settings.max_sample_points} (setting "
                       "ODECAST_MAX_SAMPLE_POINTS): ask for fewer samples or times, or split the request",
                       "over_limit")
    answer = times * channels * (2 + len(request.quantiles))
    if answer > settings.max_answer_values:
        sent = "quantiles" in request.model_fields_set  # else the default levels: not the client's field
        levels = f"{len(request.quantiles)} quantiles" + ("" if sent else " (the default)")
        raise _invalid(("body", "quantiles") if sent and request.quantiles else ("body", "series"),
                       f"the answer would hold {answer} numbers ({times} requested times x {channels} "
                       f"channels x mean, std and {levels}); the limit is {settings.max_answer_values} "
                       "(setting ODECAST_MAX_ANSWER_VALUES): ask for fewer times or quantiles, or split the "
                       "request", "over_limit")


def forecast(entry: ModelEntry, request: ForecastRequest, settings: Settings,
             metrics: Metrics) -> dict[str, Any]:
    """Check, predict and shape the answer: dicts, lists and numpy arrays, for FastJSONResponse."""
    model: Forecaster = entry.model
    check_request(request, settings, len(model.channels))
    queries = [build_query(series, model, settings, ("body", "series", i))
               for i, series in enumerate(request.series)]
    try:
        with timed("model"):
            prediction = model.predict(queries, quantiles=request.quantiles,
                                       num_samples=request.num_samples, seed=request.seed)
    except SolverStepLimitError as exc:
        where = ("body", "series") if exc.query is None else ("body", "series", exc.query)
        raise _invalid(where, str(exc), "solver_step_limit") from None
    except ValueError as exc:
        raise _invalid(("body",), str(exc), "value_error") from None
    metrics.nfe.labels(entry.name).observe(prediction.nfe)
    forecasts = []
    for i, (series, result) in enumerate(zip(request.series, prediction.forecasts, strict=True)):
        arrays = [result.mean, result.std, *result.quantiles.values()]
        if not all(np.isfinite(array).all() for array in arrays):
            raise _invalid(("body", "series", i), "the model's forecast for this series is not finite; its "
                                                  "values are probably far outside the training data",
                           "non_finite_forecast")
        forecasts.append({
            "id": series.id,
            "at": series.at,
            "mean": result.mean,
            "std": result.std,
            "quantiles": {str(level): result.quantiles[level] for level in request.quantiles},
            "kind": result.kind,
        })
    return {"model": entry.name, "model_version": model.version, "forecasts": forecasts,
            "nfe": prediction.nfe}
