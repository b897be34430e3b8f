"""GET /models: every checkpoint found, loaded or not, with the request limits."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RegistryDep, SettingsDep
from service.api.routes.health import get_and_head
from service.api.schemas.common import error_responses
from service.api.schemas.models import ModelInfo, ModelList

router = APIRouter(tags=["models"])


@get_and_head(router, "/models", response_model=ModelList, responses=error_responses(401, 503))
async def list_models(registry: RegistryDep, settings: SettingsDep) -> ModelList:
    """Every model with its kind, channels, time unit, training metrics, version and any load error."""
    return ModelList(default_model=settings.default_model, models=[ModelInfo.of(entry) for entry in registry],
                     limits=settings.limits())
