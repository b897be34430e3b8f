"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import MetricsDep
from service.api.routes.health import get_and_head

router = APIRouter(tags=["metrics"])


PROMETHEUS_TEXT = {200: {"content": {"text/plain": {}}, "description": "Prometheus exposition format."}}


@get_and_head(router, "/metrics", response_class=Response, responses=PROMETHEUS_TEXT)
async def metrics(metrics: MetricsDep) -> Response:
    """Requests and latency by route and status, solver NFE per call, models loaded and failed."""
    return Response(metrics.render(), media_type=metrics.content_type)
