"""Where the server's own time goes on a typical POST /forecast: the app called in process.

The serving benchmark (``serve_forecast.py``) measures the server's share of each request
(``Server-Timing``: app minus model) but not what it is made of. This calls the app through its
ASGI interface, as uvicorn would but without sockets, under uvloop, and stamps the time at
each hand-over:

- ``before the hop``: middleware, routing, reading and parsing the body, FastAPI's dependencies
  and the body's validation, up to the hand-over to the threadpool;
- ``hop to the worker``: from that hand-over until the handler's work starts on a worker thread;
- ``work outside the model``: the route's checks, building the queries and the answer's dict;
- ``hop back, rendering``: the JSON rendering (in the worker) and the hand-back to the loop;
- ``after the hop``: from the loop taking the answer back to the response starting.

The stamps wrap two functions: FastAPI's ``run_in_threadpool`` as ``fastapi.routing`` calls it,
and ``service.api.forecasting.forecast``. Each request is followed by a 2 ms idle gap, as
between real requests, so that the worker thread is asleep when work arrives, as it is in
service. Health and ``GET /models`` are timed whole, as a baseline of routing and middleware.

    python benchmarks/serve_segments.py [--requests 300] [--out FILE]

Prints the medians and writes benchmarks/results/serve_segments.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fastapi.routing  # noqa: E402

import service.api.routes.forecast as forecast_route  # noqa: E402
from benchmarks.serve_forecast import compact_json, make_series, request_body  # noqa: E402
from service.api.app import create_app  # noqa: E402
from service.api.settings import Settings  # noqa: E402

# name: (first stamp, last stamp, whether the model call lies between them and is taken out)
SEGMENTS = {"before the hop": ("enter", "submit", False),
            "hop to the worker": ("submit", "work_start", False),
            "work outside the model": ("work_start", "work_end", True),
            "hop back, rendering": ("work_end", "resumed", False),
            "after the hop": ("resumed", "response_start", False),
            "app minus model": ("enter", "response_start", True)}


def stamp_hand_overs(stamps: dict[str, float]) -> None:
    """Record when the threadpool hand-over starts and ends and when the route's work runs."""
    run_in_threadpool = fastapi.routing.run_in_threadpool
    forecast = forecast_route.forecasting.forecast

    async def stamped_run_in_threadpool(func, *args, **kwargs):
        stamps["submit"] = time.perf_counter()
        result = await run_in_threadpool(func, *args, **kwargs)
        stamps["resumed"] = time.perf_counter()
        return result

    def stamped_forecast(*args, **kwargs):
        stamps["work_start"] = time.perf_counter()
        result = forecast(*args, **kwargs)
        stamps["work_end"] = time.perf_counter()
        return result

    fastapi.routing.run_in_threadpool = stamped_run_in_threadpool
    forecast_route.forecasting.forecast = stamped_forecast


async def call(app, method: str, path: str, body: bytes, stamps: dict[str, float]) -> dict[bytes, bytes]:
    """One request through the ASGI interface; the response's headers."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    headers: dict[bytes, bytes] = {}

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            stamps["response_start"] = time.perf_counter()
            headers.update(message["headers"])
            if message["status"] != 200:
                raise RuntimeError(f"{method} {path} answered {message['status']}")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {}}
    stamps["enter"] = time.perf_counter()
    await app(scope, receive, send)
    return headers


async def measure(requests: int) -> dict:
    stamps: dict[str, float] = {}
    stamp_hand_overs(stamps)
    app = create_app(Settings())
    series = [make_series(np.random.default_rng(0), 2, 50, 100)]
    body = compact_json(request_body(Settings().default_model, series, 64))
    segments: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    whole: dict[str, list[float]] = {"GET /v2/health/live": [], "GET /models": []}
    async with app.router.lifespan_context(app):
        for round_ in range(requests + 20):   # the first 20 warm up
            timing = (await call(app, "POST", "/forecast", body, stamps))[b"server-timing"].decode()
            model_ms = float(timing.split("model;dur=")[1].split(",")[0])
            if round_ >= 20:
                for name, (first, last, holds_model) in SEGMENTS.items():
                    spent = (stamps[last] - stamps[first]) * 1000
                    segments[name].append(spent - model_ms if holds_model else spent)
            await asyncio.sleep(0.002)
            for endpoint in whole:
                method, path = endpoint.split()
                started = time.perf_counter()
                await call(app, method, path, b"", stamps)
                if round_ >= 20:
                    whole[endpoint].append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.002)
    return {"segments_p50_ms": {name: float(np.median(v)) for name, v in segments.items()},
            "segments_p90_ms": {name: float(np.percentile(v, 90)) for name, v in segments.items()},
            "whole_request_p50_ms": {name: float(np.median(v)) for name, v in whole.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_segments.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = uvloop.run(measure(args.requests))
    results["setup"] = {"command": "python " + " ".join(sys.argv), "requests": args.requests,
                        "torch": torch.__version__, "python": platform.python_version(),
                        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, torch threads 1"}
    for name, ms in results["segments_p50_ms"].items():
        print(f"{name:24s} p50 {ms:6.3f} ms   p90 {results['segments_p90_ms'][name]:6.3f} ms")
    for name, ms in results["whole_request_p50_ms"].items():
        print(f"{name:24s} p50 {ms:6.3f} ms (whole request)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
