"""The limits around a request: body size (413) and arrival time (408), a client that leaves
(499), requests in flight (503) and a client that does not read its answer."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest
from starlette.requests import ClientDisconnect

from service.api.app import create_app
from service.api.middleware import ConcurrencyLimitMiddleware
from service.api.settings import Settings


def test_body_over_the_limit_is_413_by_declared_length(make_client):
    client = make_client(max_body_bytes=100)
    answer = client.post("/forecast", content=b"{" + b" " * 200 + b"}",
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["detail"][0] == {"type": "body_too_large", "loc": ["body"], "field": "body",
                                          "msg": "request body is larger than the limit of 100 bytes"}


def test_body_over_the_limit_is_413_when_streamed_without_length(make_client):
    client = make_client(max_body_bytes=100)
    chunks = iter([b'{"series": [', b" " * 60, b" " * 60, b"]}"])
    answer = client.post("/forecast", content=chunks, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    small = client.post("/forecast", content=iter([b'{"series"', b": []}"]),
                        headers={"Content-Type": "application/json"})
    assert small.status_code == 422  # read whole and replayed: the app saw the real body


def call_asgi(app, messages, path="/forecast"):
    """Send ``messages`` as the request's receive() answers (then stall); return what was sent."""
    sent: list[dict] = []

    async def run() -> None:
        pending = list(messages)

        async def receive():
            if pending:
                return pending.pop(0)
            await asyncio.Event().wait()  # a client that sends nothing more

        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
                 "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
                 "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("test", 1),
                 "root_path": ""}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(run())
    return sent


def counted(app, status):
    return app.state.metrics.requests.labels("POST", "/forecast", str(status))._value.get()


def test_a_client_that_leaves_mid_body_is_a_499_not_a_500(models_dir, caplog):
    app = create_app(Settings(models_dir=models_dir, torch_threads=1))
    with caplog.at_level(logging.INFO, logger="odecast.access"):
        sent = call_asgi(app, [{"type": "http.request", "body": b'{"ser', "more_body": True},
                               {"type": "http.disconnect"}])
    assert sent == []  # nothing can reach it
    assert counted(app, 499) == 1 and counted(app, 500) == 0
    (line,) = [r for r in caplog.records if r.name == "odecast.access"]
    assert line.status == 499 and line.getMessage() == "POST /forecast 499"
    assert not [r for r in caplog.records if r.name == "odecast.error"]


def test_a_body_that_does_not_arrive_in_time_is_a_408(models_dir):
    app = create_app(Settings(models_dir=models_dir, torch_threads=1, body_timeout_s=0.05))
    sent: list[dict] = []
    worker = threading.Thread(daemon=True, target=lambda: sent.extend(
        call_asgi(app, [{"type": "http.request", "body": b'{"ser', "more_body": True}])))
    worker.start()
    worker.join(60)  # a hang guard, not a timing target: only the body timeout ends this call
    assert sent, "no answer: the body timeout did not fire"
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    (error,) = json.loads(sent[1]["body"])["detail"]
    assert error["field"] == "body" and error["type"] == "body_timeout"
    assert "ODECAST_BODY_TIMEOUT_S" in error["msg"]
    assert counted(app, 408) == 1


def test_the_body_timeout_is_a_setting_listed_with_the_limits(make_client):
    description = make_client(body_timeout_s=12.5).get("/openapi.json").json()["info"]["description"]
    assert "| `BODY_TIMEOUT_S` | 12.5 |" in description


def test_posts_beyond_the_concurrency_limit_get_503_before_their_body_is_read():
    """The models answer one call at a time; waiting requests held their bodies and answers
    (32 concurrent maximal forecasts: 3.5 GB). GETs, the health probes, are never limited."""
    release = asyncio.Event()
    answers: dict[str, list] = {"first": [], "second": [], "probe": []}

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def unread(scope=None):
        raise AssertionError("a refused request's body is not read")

    def call(limited, method, name):
        async def send(message):
            answers[name].append(message)
        scope = {"type": "http", "method": method, "path": "/forecast", "headers": []}
        return asyncio.ensure_future(limited(scope, unread, send))

    async def scenario():
        limited = ConcurrencyLimitMiddleware(slow_app, max_requests=1, send_timeout_s=5.0)
        first = call(limited, "POST", "first")
        await asyncio.sleep(0)
        await call(limited, "POST", "second")                  # answered at once, while the first waits
        probe = call(limited, "GET", "probe")
        release.set()
        await asyncio.gather(first, probe)
        return limited.in_flight

    assert asyncio.run(scenario()) == 0
    refused = answers["second"][0]
    assert refused["status"] == 503 and (b"retry-after", b"1") in refused["headers"]
    error = json.loads(answers["second"][1]["body"])["detail"][0]
    assert error["type"] == "server_busy" and "ODECAST_MAX_CONCURRENT_REQUESTS" in error["msg"]
    assert error["msg"].startswith("the server is busy: 1 request in progress")
    assert answers["first"][0]["status"] == 200 and answers["probe"][0]["status"] == 200


def test_a_client_that_stops_reading_its_answer_gives_its_slot_back():
    """Otherwise 16 clients that never read would lock every other POST out."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 100})

    async def stuck_send(message):
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()                                  # the socket never drains

    async def scenario():
        limited = ConcurrencyLimitMiddleware(app, max_requests=1, send_timeout_s=0.05)
        scope = {"type": "http", "method": "POST", "path": "/forecast", "headers": []}
        with pytest.raises(ClientDisconnect):
            await asyncio.wait_for(limited(scope, None, stuck_send), timeout=5)
        return limited.in_flight

    assert asyncio.run(scenario()) == 0


def test_a_slot_is_taken_only_once_the_body_has_arrived(make_client):
    """The limiter sits inside the body limit: a slow upload holds no slot."""
    app = make_client().app
    layers, layer = [], app.middleware_stack
    while layer is not None:
        layers.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    assert layers.index("BodyLimitMiddleware") < layers.index("ConcurrencyLimitMiddleware")
