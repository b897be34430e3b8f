"""The least FastAPI server for the same forecast: the floor under ``serve_forecast.py``'s overhead.

Issue #3 asks for FastAPI on uvicorn with the torch work in a plain ``def`` handler (the
threadpool). This server is built that way and does nothing else: an async dependency reads
the raw body, the plain ``def`` route parses it with orjson, builds the queries with no checks,
calls ``Forecaster.predict`` and writes the answer with orjson. No validation, error handling,
limits, API key, dependencies on settings or registry, request ids, metrics or logs. Its HTTP
overhead is what uvicorn, FastAPI, the threadpool hop and the client cost on this machine for
this request, with none of odecast's own serving code: the lowest overhead that any server
built the way the issue asks could reach here. It is a benchmark baseline, never a server to
run: it trusts every byte it is sent.

It reports its model call and its time from request to response start in ``Server-Timing``,
as ``odecast serve`` does, so that ``serve_forecast.py`` splits its overhead the same way.

    python benchmarks/least_server.py --models-dir models --model spirals --threads 1

prints uvicorn's "running on http://127.0.0.1:PORT" line (port 0: any free port) and serves.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
import torch
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.model.forecaster import Forecaster, ForecastQuery  # noqa: E402


def queries_from_json(series: list[dict]) -> list[ForecastQuery]:
    """Each JSON series as a query, with no checks (``null`` values become NaN): what this server
    predicts from, and what ``serve_forecast.py`` calls directly, so both ask the same."""
    return [ForecastQuery(np.asarray(s["times"], dtype=np.float64), np.array(s["values"], dtype=np.float64),
                          np.asarray(s["at"], dtype=np.float64)) for s in series]


async def raw_body(request: Request) -> bytes:
    return await request.body()


def create_least_app(forecaster: Forecaster) -> FastAPI:
    app = FastAPI()

    @app.post("/forecast")
    def forecast(body: Annotated[bytes, Depends(raw_body)], request: Request) -> Response:
        data = orjson.loads(body)
        queries = queries_from_json(data["series"])
        started = time.perf_counter()
        prediction = forecaster.predict(queries, quantiles=data["quantiles"], num_samples=data["num_samples"],
                                        seed=data["seed"])
        request.scope["model_ms"] = (time.perf_counter() - started) * 1000
        forecasts = [{"id": s.get("id"), "at": s["at"], "mean": f.mean, "std": f.std,
                      "quantiles": {str(level): values for level, values in f.quantiles.items()},
                      "kind": f.kind}
                     for s, f in zip(data["series"], prediction.forecasts, strict=True)]
        answer = {"model": forecaster.name, "model_version": forecaster.version, "forecasts": forecasts,
                  "nfe": prediction.nfe}
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    return app


def with_server_timing(app: ASGIApp) -> ASGIApp:
    """``Server-Timing: model;dur=..., app;dur=...`` on every answer, as odecast's middleware writes it."""

    async def timed_app(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                app_ms = (time.perf_counter() - started) * 1000
                MutableHeaders(scope=message).append(
                    "Server-Timing", f"model;dur={scope.get('model_ms', 0.0):.3f}, app;dur={app_ms:.3f}")
            await send(message)

        await app(scope, receive, send_with_timing)

    return timed_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="spirals")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    forecaster = Forecaster.load(args.models_dir / args.model)
    gc.freeze()  # as odecast serve does after loading its models
    uvicorn.run(with_server_timing(create_least_app(forecaster)), host="127.0.0.1", port=args.port,
                access_log=False, log_level="info")


if __name__ == "__main__":
    main()
