"""Dependencies: settings, the model registry, metrics, model lookup and the API key check.

They are ``async def`` because none blocks: FastAPI would run a plain ``def`` dependency in the
threadpool, a thread hop per dependency per request.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError, Loc, shown
from service.api.metrics import Metrics
from service.api.registry import ModelEntry, ModelRegistry
from service.api.settings import Settings
from service.model import classifier, forecaster


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_registry(request: Request) -> ModelRegistry:
    registry = getattr(request.app.state, "registry", None)
    if registry is None:
        raise ApiError(503, (), "the server is starting: models are not loaded yet", "not_ready")
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def unknown_model(registry: ModelRegistry, name: str, loc: Loc, listed: bool = True) -> ApiError:
    """404 for a name that no checkpoint has, listing the names that one has when ``listed``
    (not to a client that has not shown the API key)."""
    known = f"; models here: {', '.join(registry.names()) or 'none'}" if listed else ""
    return ApiError(404, loc, f"unknown model {shown(name)}{known}", "unknown_model")


# Where each kind of model answers, for a client that sent one to another endpoint.
SERVED_BY = {forecaster.KIND: "POST /forecast",
             classifier.KIND: "POST /classify and POST /v2/models/{name}/infer"}


def serving_model(registry: ModelRegistry, requested: str | None, kind: str, loc: Loc,
                  default: str | None = None) -> ModelEntry:
    """The loaded model called ``requested`` (or, when the client named none, the configured
    ``default``), of ``kind``; else 404 (unknown), 503 (not loaded) or 422 (wrong kind).

    A missing default is the server's state (503), not the client's mistake (404).
    """
    name = requested if requested is not None else default
    entry = registry.get(name)
    if entry is None and requested is not None:
        raise unknown_model(registry, name, loc)
    if entry is None or not entry.ready:
        reason = f"it failed to load: {entry.error}" if entry else "no such checkpoint was found"
        raise ApiError(503, loc, f"model {shown(name)} is not ready; {reason}", "model_not_ready")
    if entry.kind != kind:
        served_by = SERVED_BY.get(entry.kind, "no endpoint")
        raise ApiError(422, loc, f"model {name!r} is a {entry.kind} model, served by {served_by}; this "
                                 f"endpoint needs a {kind} model", "wrong_model_kind")
    return entry


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="The API key, when the server is configured with one.")
_bearer = HTTPBearer(auto_error=False, description="The API key as a bearer token.")


async def require_api_key(request: Request, settings: SettingsDep,
                    api_key: Annotated[str | None, Security(_api_key_header)],
                    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    """401 unless the configured API key came as X-API-Key or as a bearer token.

    ``create_app`` adds this to the guarded routes only when the server has a key, so a key is
    always configured here."""
    given = api_key if api_key is not None else (bearer.credentials if bearer else None)
    challenge = {"WWW-Authenticate": "Bearer"}
    if not given:
        scheme = request.headers.get("authorization", "").partition(" ")[0]  # Basic, Digest, ...
        not_one = f" (an Authorization {shown(scheme)} header is not one)" if scheme else ""
        header = "Authorization" if scheme else "X-API-Key"
        raise ApiError(401, ("header", header), f"missing API key{not_one}: send 'X-API-Key: <key>' or "
                       "'Authorization: Bearer <key>'", "missing_api_key", challenge)
    if not secrets.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
        header = "X-API-Key" if api_key is not None else "Authorization"
        raise ApiError(401, ("header", header), "wrong API key", "invalid_api_key", challenge)
