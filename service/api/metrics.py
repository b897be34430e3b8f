"""Prometheus metrics of one app (requests, latency, solver NFE, models loaded), and per-request
timings for the ``Server-Timing`` response header (how long the model call took).

Each app owns its :class:`~prometheus_client.CollectorRegistry`, so several apps in one process
(the tests build many) never collide on metric names. ``odecast serve`` runs one process, so
the default single-process client is right; more workers would need multiprocess mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NFE_BUCKETS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000)


# Per-request durations (ms) by name, for the Server-Timing header. The middleware puts a fresh
# dict in the context; code in the threadpool sees a copy of the context but the same dict.
request_timings: ContextVar[dict[str, float] | None] = ContextVar("request_timings", default=None)


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Record how long the block took as ``name`` in the current request's Server-Timing."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings = request_timings.get()
        if timings is not None:
            timings[name] = (time.perf_counter() - started) * 1000


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["method", "endpoint", "status"]
        self.requests = Counter("odecast_http_requests", "HTTP requests by method, route and status.",
                                labels, registry=self.registry)
        self.latency = Histogram("odecast_http_request_duration_seconds",
                                 "Time from request to last response byte, by method, route and status.",
                                 labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.nfe = Histogram("odecast_solver_nfe",
                             "ODE function evaluations per model call (all solves of one request).",
                             ["model"], buckets=NFE_BUCKETS, registry=self.registry)
        self.models = Gauge("odecast_models", "Checkpoints under the models directory, by state.",
                            ["state"], registry=self.registry)

    def observe_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(method, endpoint, str(status)).inc()
        self.latency.labels(method, endpoint, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
