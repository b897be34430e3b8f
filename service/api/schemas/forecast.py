"""Bodies of POST /forecast.

Pydantic checks what needs no model: types, finite numbers, non-empty lists, quantile range.
What depends on the model (channel count, numeric vs timestamp times, horizon) or on settings
(limits) is checked in :mod:`service.api.forecasting`, with the same error shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetPydanticSchema, WithJsonSchema
from pydantic_core import core_schema

from service.api.schemas.common import FailFastList, RequestBody

FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]


# A time as sent: an int, a finite float or a string (kept, so that ``at`` is echoed back
# unchanged). All in pydantic-core, with no Python call per time point: with one, validating a
# typical body (150 time points) took 73 us against 25 us now, and a batch of 32 series 32
# times that. Strict members: a bool is not a time.
_TIME_POINT_SCHEMA = core_schema.union_schema(
    [core_schema.int_schema(strict=True), core_schema.float_schema(strict=True, allow_inf_nan=False),
     core_schema.str_schema(strict=True)],
    mode="left_to_right", custom_error_type="time_point",
    custom_error_message="Input should be a finite number or an ISO-8601 timestamp string")

TimePoint = Annotated[
    int | float | str, GetPydanticSchema(lambda _source, _handler: _TIME_POINT_SCHEMA),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}),
]


# A quantile level: a JSON number in (0, 1). One message for every fault, so that NaN (which
# fails every comparison) is not told that it should be "less than 1".
QuantileLevel = Annotated[
    float, GetPydanticSchema(lambda _source, _handler: core_schema.custom_error_schema(
        core_schema.float_schema(strict=True, allow_inf_nan=False, gt=0, lt=1), custom_error_type="quantile",
        custom_error_message="Input should be a finite number in (0, 1), exclusive")),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
]


def _rows(value: Any) -> Any:
    """A flat list (one-channel model) becomes one-value rows; anything else is left to validate."""
    if not isinstance(value, list):
        return value
    return [[cell] if cell is None or (isinstance(cell, int | float) and not isinstance(cell, bool)) else cell
            for cell in value]


Values = Annotated[
    FailFastList[FailFastList[FiniteNumber | None]], BeforeValidator(_rows),
    WithJsonSchema({"anyOf": [
        {"type": "array", "items": {"type": "array", "items": {"type": ["number", "null"]}}},
        {"type": "array", "items": {"type": ["number", "null"]}},
    ]}),
]

# A counter-clockwise spiral of the bundled model's training data (centre (5, 0), r = 0.3 t),
# observed at irregular times from t = 7.55, one value missing.
EXAMPLE_REQUEST = {
    "model": "spirals",
    "series": [{
        "id": "s1",
        "times": [0.0, 0.37, 1.9, 2.2],
        "values": [[5.67, 2.17], [None, 2.37], [2.16, -0.09], [2.23, -0.95]],
        "at": [0.5, 3.0, 5.0],
    }],
    "quantiles": [0.05, 0.5, 0.95],
    "num_samples": 64,
    "seed": 0,
}


class SeriesIn(RequestBody):
    id: str | None = Field(None, description="Any label; echoed back.")
    times: FailFastList[TimePoint] = Field(
        min_length=1, description="Observation times, any order: numbers, or ISO-8601 timestamps for a "
                                  "model trained on timestamps (without a zone: UTC; a series' `times` and "
                                  "`at` all carry a zone or none does). No time may repeat.")
    values: Values = Field(
        description="One row per time, one column per model channel; null is a missing value. "
                    "A flat list is accepted for a one-channel model.")
    at: FailFastList[TimePoint] = Field(
        min_length=1, description="Times to forecast, in the same form as `times`: any order, repeats "
                                  "allowed, before, inside or after the observed window.")


class ForecastRequest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    model: str | None = Field(None, min_length=1,
                              description="Model name (GET /models); when absent, the server's default.")
    series: FailFastList[SeriesIn] = Field(min_length=1)
    # Strict: a number is a JSON number, a count a JSON integer (not true, "5" or 5.0).
    quantiles: FailFastList[QuantileLevel] = Field(
        [0.05, 0.5, 0.95], description="Quantile levels in (0, 1), each at most once.")
    num_samples: int = Field(64, strict=True, ge=1,
                             description="Posterior samples of the initial latent state.")
    seed: int = Field(0, strict=True, ge=0, le=2**63 - 1,
                      description="The same request and seed give the same answer.")


Matrix = list[list[float]]


class SeriesForecastOut(BaseModel):
    id: str | None
    at: list[float | str] = Field(description="The requested times, in the order and form sent.")
    mean: Matrix = Field(description="Predictive mean, one row per requested time, one column per channel.")
    std: Matrix = Field(description="Predictive standard deviation, observation noise included.")
    quantiles: dict[str, Matrix] = Field(
        description="Predictive quantiles, keyed by level as the shortest decimal that reads back as "
                    "it (Python's repr: 0.05 -> \"0.05\", 0.00001 -> \"1e-05\"), in the order asked.")
    kind: list[Literal["backcast", "interpolation", "extrapolation"]] = Field(
        description="Per requested time: before the first observation, within the observed window, "
                    "or after the last observation.")


class ForecastResponse(BaseModel):
    model: str
    model_version: str = Field(description="First 12 hex digits of the weights' SHA-256.")
    forecasts: list[SeriesForecastOut]
    nfe: int = Field(description="ODE function evaluations the request's solves took.")
