"""The FastAPI app: ``create_app(settings)`` wires settings, models, routes, errors and middleware.

Models are loaded once, in the lifespan (before the server accepts connections), into a
:class:`~service.api.registry.ModelRegistry` on ``app.state``; routes reach it through
dependencies. Nothing is loaded at import, so tests build apps on their own model directories.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from service import __version__
from service.api.cpu import available_cpus, configure_torch_threads
from service.api.deps import require_api_key
from service.api.errors import OIP_PREFIX, install_error_handlers
from service.api.logs import stop_background_writer
from service.api.metrics import Metrics
from service.api.middleware import BodyLimitMiddleware, ConcurrencyLimitMiddleware, RequestContextMiddleware
from service.api.registry import ModelRegistry
from service.api.routes import classify, forecast, health, inference, metrics, models
from service.api.schemas.classify import ClassifyRequest
from service.api.schemas.forecast import ForecastRequest
from service.api.schemas.inference import InferRequest
from service.api.settings import Settings
from service.model import classifier, forecaster

log = logging.getLogger("odecast.app")

DESCRIPTION = """\
Forecasts for irregularly sampled time series from latent neural ODEs, and an MNIST ODE-Net.

**Errors** are `{"detail": [{"type", "loc", "field", "msg"}]}`, where `field` names the fault as
one path (`series[0].values[3]`; a list's first fault, and an object's first unknown field, are
named, not each of them); under `/v2/` they are the Open Inference Protocol's
`{"error": "..."}`. Malformed or over-limit requests get 422 (400 under `/v2/`), an unknown
model 404, a body over the byte limit 413, a body that does not arrive in full within
`BODY_TIMEOUT_S` 408 (a client that leaves before its body is read is logged as 499), a
missing or wrong API key 401 (checked before the body is parsed), a model that is not loaded
503. `POST /forecast` reads JSON only: its Content-Type must be `application/json` (any case,
any parameters) or `application/...+json`; anything else, a missing one included, gets 415, as
does a `Content-Encoding` other than `identity`; the body must be UTF-8 (a byte order mark is
skipped).

**Reach**: a model answers within what it was trained on (see `GET /models`): a series'
observations, and the times asked after its first observation, lie at most `max_span` (its
longest training series) from that first observation; a time before it, at most
`max_backcast` (0 for a model not trained to backcast). A series must observe every channel at
least once, unless the model's `unseen_channels` is true.

**Values**: an observed value must lie within the model's `value_limits` (see `GET /models`):
100 training standard deviations either side of its channel's training mean. Further out the
model's answer no longer depends on the value, which is then almost always in the wrong units.

**Pixels** (`POST /classify`, JSON): an image with any value above 1 is read as 0..255 whole
numbers, otherwise as 0..1; OIP `infer` takes FP32 in [0, 1].

**API key**: when the server has one (`ODECAST_API_KEY`), send it as `X-API-Key: <key>` or
`Authorization: Bearer <key>`; health probes, `/metrics` and these docs need none.

**Limits** of this server (settings, environment variables `ODECAST_<NAME>`):

| setting | value | meaning |
|---|---|---|
"""


def describe(settings: Settings) -> str:
    limits = {**settings.limits(), "body_timeout_s": settings.body_timeout_s,
              "send_timeout_s": settings.send_timeout_s}
    rows = [f"| `{name.upper()}` | {value} | {type(settings).model_fields[name].description} |"
            for name, value in limits.items()]
    return DESCRIPTION + "\n".join(rows) + "\n"


# Bodies that routes read by hand (in a dependency, after the API key check: JSON, multipart, or a
# JSON header plus binary tensors), so FastAPI does not put them in the OpenAPI components; the
# routes' openapi_extra refers to them there.
HAND_READ_BODIES = (ForecastRequest, ClassifyRequest, InferRequest)


def _complete_openapi(app: FastAPI) -> None:
    """The OpenAPI document as the server answers: the hand-read bodies in its components, and
    without the 422 that FastAPI lists for every route with parameters on the /v2/ routes, whose
    faults are answered 400, as the Open Inference Protocol has them."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in HAND_READ_BODIES:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            for path, operations in document["paths"].items():
                if path.startswith(OIP_PREFIX):
                    for operation in operations.values():
                        operation["responses"].pop("422", None)
            if "HTTPValidationError" not in json.dumps(document["paths"]):
                schemas.pop("HTTPValidationError", None)
                schemas.pop("ValidationError", None)
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threads = configure_torch_threads(settings.torch_threads)
        registry = ModelRegistry.load(settings.models_dir)
        app_metrics.models.labels("ready").set(registry.count(ready=True))
        app_metrics.models.labels("failed").set(registry.count(ready=False))
        log.info("models loaded", extra={"models_dir": str(settings.models_dir), "torch_threads": threads,
                                         "ready": [e.name for e in registry if e.ready],
                                         "failed": [e.name for e in registry if not e.ready]})
        for setting, name, kind in (("DEFAULT_MODEL", settings.default_model, forecaster.KIND),
                                    ("DEFAULT_CLASSIFIER", settings.default_classifier, classifier.KIND)):
            problem = registry.default_problem(name, kind)
            if problem:  # the server still serves what it has; readiness follows DEFAULT_MODEL
                log.warning("ODECAST_%s: %s", setting, problem, extra={"setting": f"ODECAST_{setting}"})
        if threads > available_cpus():
            log.warning("%d torch threads on %d CPUs: they will contend and run slower than %d",
                        threads, available_cpus(), available_cpus(), extra={"torch_threads": threads})
        app.state.registry = registry
        # Start-up objects (torch, the models) live as long as the process: freezing them keeps
        # the collector from re-scanning ~200k objects while a request builds its response lists.
        gc.freeze()
        yield
        gc.unfreeze()
        app.state.registry = None
        stop_background_writer()

    # No redirect from '/models/' to '/models': a 307 whose Location is built from the client's
    # Host header, which curl does not follow for a POST; a 404 that names the path instead.
    app = FastAPI(title="odecast", version=__version__, description=describe(settings), lifespan=lifespan,
                  redirect_slashes=False)
    app.state.settings = settings
    app.state.metrics = app_metrics
    app.state.registry = None
    install_error_handlers(app)
    _complete_openapi(app)
    # The API key check guards these routes only on a server that has a key: without one it
    # would run on every request to let it through (0.1-0.15 ms of a typical forecast here, two
    # pairs of serving-benchmark runs), and the OpenAPI document would ask for a key that the
    # server does not.
    key_check = [Depends(require_api_key)] if settings.api_key is not None else []
    guarded = (forecast.router, classify.router, models.router, health.metadata_router, inference.router)
    open_to_all = (health.router, metrics.router)  # probes and metrics never need a key
    for router in guarded:
        app.include_router(router, dependencies=key_check)
    for router in open_to_all:
        app.include_router(router)
    # Added first, so innermost: a request takes a slot only once its body has arrived.
    app.add_middleware(ConcurrencyLimitMiddleware, max_requests=settings.max_concurrent_requests,
                       send_timeout_s=settings.send_timeout_s)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       timeout_s=settings.body_timeout_s)
    # Paths a metric may name as they are: FastAPI's pages (not in the scope's route) and every
    # route without parameters (so a 408 or 413 on /forecast, refused before routing, is counted
    # under /forecast rather than as unmatched).
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    fixed = [route.path for router in (*guarded, *open_to_all) for route in router.routes
             if "{" not in route.path]
    app.add_middleware(RequestContextMiddleware, metrics=app_metrics,
                       plain_paths=frozenset(path for path in (*docs, *fixed) if path))
    return app
