"""ASGI middleware: request ids, Server-Timing, access log and metrics; the limit on requests in
flight; and the body size limit.

All are plain ASGI callables rather than ``BaseHTTPMiddleware``, which would copy every body
through an extra task. :class:`RequestContextMiddleware` is the outermost layer, so its access
log and metrics see every answer, including a 413 or 408 from :class:`BodyLimitMiddleware`, a
499 for a client that left before its body was read, and a 500 from a bug (which it answers
itself, with the request id, after logging the traceback).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_item, error_response
from service.api.logs import request_id_var
from service.api.metrics import Metrics, request_timings

REQUEST_ID_HEADER = "X-Request-ID"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

access_log = logging.getLogger("odecast.access")
error_log = logging.getLogger("odecast.error")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _route_template(scope: Scope, plain_paths: frozenset[str]) -> str:
    """The matched route's path template (``/v2/models/{name}``), so metric labels stay few.

    The router records API routes in the scope; FastAPI's own pages (``/docs``, ``/redoc``,
    ``/openapi.json``) are not recorded there, and requests refused before routing (bodies over
    the limit or too slow) never reach it: ``plain_paths`` names those pages and every route
    path without parameters. Any other path is counted as ``unmatched``: raw paths could be
    anything.
    """
    route = getattr(scope.get("route"), "path", None)
    if route:
        return route
    return scope["path"] if scope["path"] in plain_paths else "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, plain_paths: frozenset[str] = frozenset()):
        self.app = app
        self.metrics = metrics
        self.plain_paths = plain_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        timings: dict[str, float] = {}
        timings_token = request_timings.set(timings)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.append(REQUEST_ID_HEADER, request_id)
                timings["app"] = (time.perf_counter() - started) * 1000
                headers.append("Server-Timing", ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # before the response: nothing can be sent, and it is no error of ours
            if not response_started:
                status = CLIENT_CLOSED_REQUEST
        except Exception:
            error_log.exception("unhandled error while serving %s %s", scope["method"], scope["path"])
            if not response_started:
                item = error_item((), f"internal server error; quote request id {request_id}",
                                  "internal_error")
                await error_response(scope["path"], 500, [item])(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            endpoint = _route_template(scope, self.plain_paths)
            self.metrics.observe_request(scope["method"], endpoint, status, seconds)
            access_log.info("%s %s %d", scope["method"], scope["path"], status,
                            extra={"method": scope["method"], "path": scope["path"], "status": status,
                                   "duration_ms": round(seconds * 1000, 3)})
            request_timings.reset(timings_token)
            request_id_var.reset(token)


class ConcurrencyLimitMiddleware:
    """At most ``max_requests`` POSTs (the model calls) in the server at once; one more gets 503
    with ``Retry-After``; and a client that takes longer than ``send_timeout_s`` to take its answer
    is dropped.

    Why: a model answers one call at a time, so requests beyond a few only wait, each holding
    its parsed body and then its answer; a probe's 32 concurrent maximal forecasts held 3.5 GB.
    A client told 503 can retry. The slot is taken after the body has arrived (this sits inside
    :class:`BodyLimitMiddleware`), so slow uploads cannot fill the slots; and it is given back
    when a client stops reading its answer, so slow readers cannot either (before that bound,
    16 clients that never read would have locked every other client out). GETs (health,
    metadata) are cheap and never limited, so probes keep answering under load.
    """

    def __init__(self, app: ASGIApp, max_requests: int, send_timeout_s: float):
        self.app = app
        self.max_requests = max_requests
        self.send_timeout_s = send_timeout_s
        self.in_flight = 0   # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_requests:
            requests = f"{self.in_flight} request{'s' * (self.in_flight != 1)}"
            item = error_item((), f"the server is busy: {requests} in progress, its limit (setting "
                                  "ODECAST_MAX_CONCURRENT_REQUESTS); retry shortly", "server_busy")
            await error_response(scope["path"], 503, [item], {"Retry-After": "1"})(scope, receive, send)
            return

        async def send_in_time(message: Message) -> None:
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await send(message)
            except TimeoutError:
                error_log.warning("%s %s: the client took more than %g s to read its answer (setting "
                                  "ODECAST_SEND_TIMEOUT_S); dropped", scope["method"], scope["path"],
                                  self.send_timeout_s)
                raise ClientDisconnect() from None

        self.in_flight += 1
        try:
            await self.app(scope, receive, send_in_time)
        finally:
            self.in_flight -= 1


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413: by Content-Length up front, else while reading;
    and bodies that take longer than ``timeout_s`` to arrive in full with 408.

    The body is read (at most ``max_bytes`` of it) before the app runs and then replayed, so a
    client that lies about or omits Content-Length (chunked transfer) is caught as well. A client
    that goes away before its body is complete raises :class:`ClientDisconnect`: no answer can
    reach it, and the access log and metrics count it as 499 (nginx's "client closed request").
    The timeout costs about 5 us a request (an asyncio timer).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            item = error_item(("body",), f"the request body did not arrive in full within {self.timeout_s:g} "
                              "s (setting ODECAST_BODY_TIMEOUT_S)", "body_timeout")
            await error_response(scope["path"], 408, [item], {"Connection": "close"})(scope, receive, send)
            return
        if body is None:
            await self._refuse(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body; None once it is over the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        item = error_item(("body",), f"request body is larger than the limit of {self.max_bytes} bytes",
                          "body_too_large")
        await error_response(scope["path"], 413, [item], {"Connection": "close"})(scope, receive, send)
