"""Open Inference Protocol v2 health and metadata: probes for Kubernetes, KServe and Seldon.

Liveness never looks at models (a live server that lost a model should be restarted by its
readiness, not killed); readiness is 200 only while the default model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from service import __version__
from service.api.deps import RegistryDep, SettingsDep, unknown_model
from service.api.errors import ApiError, shown
from service.api.registry import ModelEntry, ModelRegistry
from service.api.schemas.common import error_responses
from service.api.schemas.models import ModelMetadata, ModelReady, ServerLive, ServerMetadata, ServerReady
from service.model import forecaster

router = APIRouter(prefix="/v2", tags=["health (Open Inference Protocol v2)"])
# The model's metadata is not a probe: it sits behind the API key when the server has one.
metadata_router = APIRouter(prefix="/v2", tags=["health (Open Inference Protocol v2)"])


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable:
    """``router.get(path, ...)`` that answers HEAD too, as GET without the body (the server drops
    a HEAD answer's body).

    One route serves both methods, so that a 405 for any other method lists both in ``Allow``
    (the router takes ``Allow`` from the first route whose path matches). It stays out of the
    OpenAPI document, where a HEAD operation would repeat the GET's id; a GET-only twin,
    registered after it and so never reached, documents the GET."""
    def register(endpoint: Callable) -> Callable:
        router.add_api_route(path, endpoint, methods=["GET", "HEAD"], include_in_schema=False, **options)
        return router.get(path, **options)(endpoint)
    return register


def _entry(registry: ModelRegistry, name: str, listed: bool = True) -> ModelEntry:
    entry = registry.get(name)
    if entry is None:
        raise unknown_model(registry, name, ("path", "name"), listed)
    return entry


@get_and_head(router, "/health/live", response_model=ServerLive)
async def live() -> ServerLive:
    """The server is up and answering."""
    return ServerLive(live=True)


@get_and_head(router, "/health/ready", response_model=ServerReady, responses={503: {"model": ServerReady}})
async def ready(request: Request, settings: SettingsDep, response: Response) -> ServerReady:
    """200 when the default model is loaded and is a forecaster (what /forecast without a
    ``model`` serves), else 503."""
    registry: ModelRegistry | None = request.app.state.registry
    entry = registry.get(settings.default_model) if registry else None
    is_ready = entry is not None and entry.ready and entry.kind == forecaster.KIND
    response.status_code = 200 if is_ready else 503
    return ServerReady(ready=is_ready)


@get_and_head(router, "", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="odecast", version=__version__, extensions=[])


@get_and_head(metadata_router, "/models/{name}", response_model=ModelMetadata,
              responses=error_responses(401, 404, 503, oip=True))
async def model_metadata(name: str, registry: RegistryDep) -> ModelMetadata:
    """The model's versions, inputs and outputs."""
    entry = _entry(registry, name)
    if not entry.ready:
        raise ApiError(503, ("path", "name"), f"model {shown(name)} failed to load: {entry.error}",
                       "model_not_ready")
    return ModelMetadata.of(entry)


@get_and_head(router, "/models/{name}/ready", response_model=ModelReady,
              responses={503: {"model": ModelReady}, **error_responses(404, oip=True)})
async def model_ready(name: str, registry: RegistryDep, settings: SettingsDep,
                      response: Response) -> ModelReady:
    """200 when the model is loaded, 503 when it failed to load."""
    entry = _entry(registry, name, listed=settings.api_key is None)  # a probe: it needs no key
    response.status_code = 200 if entry.ready else 503
    return ModelReady(name=name, ready=entry.ready)
