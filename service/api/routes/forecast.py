"""POST /forecast. A plain ``def``: FastAPI runs it in the threadpool, so torch never blocks the
event loop, and health probes keep answering while a forecast is being solved."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.api import forecasting
from service.api.deps import MetricsDep, RegistryDep, SettingsDep, serving_model
from service.api.requests import json_body
from service.api.responses import FastJSONResponse
from service.api.schemas.common import error_responses
from service.api.schemas.forecast import ForecastRequest, ForecastResponse
from service.model.forecaster import KIND

router = APIRouter(tags=["forecast"])


@router.post("/forecast", response_model=ForecastResponse, response_class=FastJSONResponse,
             responses=error_responses(401, 404, 408, 413, 415, 422, 503),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/ForecastRequest"}}}}})
def forecast(body: Annotated[ForecastRequest, Depends(json_body(ForecastRequest))], registry: RegistryDep,
             settings: SettingsDep, metrics: MetricsDep) -> FastJSONResponse:
    """Forecast each series at its requested times: predictive mean, std and quantiles.

    Times may be irregular and values may be missing (null) in any channel; requested times
    may lie before (backcast), inside (interpolation) or after (extrapolation) the observations.
    """
    entry = serving_model(registry, body.model, KIND, ("body", "model"), default=settings.default_model)
    return FastJSONResponse(forecasting.forecast(entry, body, settings, metrics))
