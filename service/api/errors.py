"""One error shape for every failure, naming the field at fault.

Native routes answer ``{"detail": [{"type", "loc", "field", "msg"}, ...]}``: FastAPI's own 422
shape without the echoed input (which can be megabytes), plus ``field``, the location as one
readable path such as ``series[0].values[3]``. Routes under ``/v2/`` speak the Open Inference
Protocol, whose errors are ``{"error": "<message>"}`` with status 400 for a bad request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

OIP_PREFIX = "/v2/"
Loc = Sequence[str | int]


class ApiError(Exception):
    """A request the server refuses: HTTP ``status_code`` and where the fault lies."""

    def __init__(self, status_code: int, loc: Loc, msg: str, type: str,
                 headers: dict[str, str] | None = None):
        super().__init__(f"{field_path(loc)}: {msg}")
        self.status_code = status_code
        self.errors = [error_item(loc, msg, type)]
        self.headers = headers


def field_path(loc: Loc) -> str:
    """``("body", "series", 0, "values", 3)`` -> ``"series[0].values[3]"``."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or ("body" if loc else "")


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters: user input can be huge."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(text.lstrip('-'))} digits" if isinstance(value, int) else f"{len(text)} characters"
    return f"{text[:limit - 20]}... ({size})"


def error_item(loc: Loc, msg: str, type: str) -> dict[str, Any]:
    return {"type": type, "loc": list(loc), "field": field_path(loc), "msg": msg}


def printable(text: str) -> str:
    """``text`` with any lone surrogate written as its escape, ``\\ud800``: UTF-8 can carry it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _printable_strings(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k): _printable_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_strings(v) for v in value]
    return value


class ErrorJSONResponse(JSONResponse):
    """An error body that can always be written: a message or location that echoes a string
    holding a lone surrogate (no Unicode character, so no UTF-8) gets the surrogate escaped."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(_printable_strings(content))


def error_response(path: str, status_code: int, errors: list[dict[str, Any]],
                   headers: dict[str, str] | None = None) -> JSONResponse:
    if path.startswith(OIP_PREFIX):
        message = "; ".join(f"{e['field']}: {e['msg']}" if e["field"] else e["msg"] for e in errors)
        if status_code == 422:
            status_code = 400
        return ErrorJSONResponse({"error": message}, status_code=status_code, headers=headers)
    return ErrorJSONResponse({"detail": errors}, status_code=status_code, headers=headers)


def body_validation_error(exc: ValidationError) -> RequestValidationError:
    """A pydantic error from validating a body by hand, located under ``body`` as FastAPI does."""
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])


# Bodies are validated after parsing (service.api.requests), where pydantic words its errors in
# Python's terms; a client sent JSON, and reads JSON's (pydantic's own words when it parses JSON).
JSON_WORDING = {"list_type": "Input should be a valid array", "dict_type": "Input should be an object",
                "model_type": "Input should be an object"}


def _validation_item(error: dict[str, Any]) -> dict[str, Any]:
    loc, kind = tuple(error.get("loc", ())), error.get("type", "invalid")
    msg = JSON_WORDING.get(kind) or error.get("msg", "invalid")
    given = error.get("input")
    if kind == "float_type" and type(given) is int:  # 10**400: JSON allows it, no float holds it
        kind, msg = "finite_number", "Input should be a finite number"
    if kind == "int_type" and type(given) is float and abs(given) >= 2**63:  # orjson reads 2**64 up so
        kind, msg = "int_too_large", f"Input should be a whole number of at most 18 digits (got {given:.3g})"
    if kind == "json_invalid":
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        reason = (error.get("ctx") or {}).get("error", "malformed")
        return error_item(("body",), f"invalid JSON{where}: {reason}", kind)
    if loc == ("body",) and isinstance(error.get("input"), bytes | bytearray):
        return error_item(loc, "expected a JSON object; send it with Content-Type: application/json", kind)
    return error_item(loc, msg, kind)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(request.url.path, exc.status_code, exc.errors, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(request.url.path, 422, [_validation_item(e) for e in exc.errors()])


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing's refusals (no such path, a method the path does not take), in the error shape."""
    headers = getattr(exc, "headers", None)
    path = request.url.path
    message = str(exc.detail)
    if exc.status_code == 404:
        trailing = len(path) > 1 and path.endswith("/")
        slash = f" (paths end without '/': {shown(path.rstrip('/'))})" if trailing else ""
        message = f"no endpoint at {shown(path)}{slash}; see /docs"
    elif exc.status_code == 405 and headers and "Allow" in headers:
        message = f"{shown(request.method)} is not allowed on {shown(path)}; it takes {headers['Allow']}"
    return error_response(path, exc.status_code, [error_item((), message, "http_error")], headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
