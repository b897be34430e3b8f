"""JSON request bodies, read by a dependency after the request's headers are checked.

A route takes its body as ``body: Annotated[Model, Depends(json_body(Model))]`` rather than
as a plain body parameter. FastAPI parses a plain body before it solves any dependency, so a
server with an API key would answer a malformed body without the key with 422, not 401; a
dependency runs after the router's dependencies (the key check), like /classify's body reader.
The JSON itself is read by :mod:`service.api.json_reading`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.api.errors import ApiError, body_validation_error, shown
from service.api.json_reading import parse

Model = TypeVar("Model", bound=BaseModel)


JSON_MEDIA_TYPES = "application/json, or an application/...+json type"


def media_type(content_type: str) -> str:
    """A Content-Type's media type, without parameters, in lower case (``Multipart/Form-Data;
    boundary=x`` -> ``multipart/form-data``)."""
    return content_type.partition(";")[0].strip().lower()


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, in any case, with any parameters
    (a ``charset`` is left to the body's UTF-8 check)."""
    kind = media_type(content_type)
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def content_type(request: Request) -> str | None:
    """The request's one Content-Type; two that disagree are refused (415), since which one a
    reader takes is up to it."""
    values = request.headers.getlist("content-type")
    if len(set(values)) > 1:
        raise ApiError(415, ("header", "Content-Type"), f"{len(values)} different Content-Type headers; "
                       "send one", "unsupported_media_type")
    return values[0] if values else None


def check_json_content_type(request: Request) -> None:
    """415 unless the body is labelled JSON. A missing Content-Type is refused too: a browser
    page may POST ``text/plain`` or an unlabelled body to any server it can reach without asking
    first (no CORS preflight), and a JSON API that reads those can be driven by any web page.
    curl's ``-d`` without ``-H`` labels the body as a form, refused with the same hint."""
    label = content_type(request)
    if label == "application/json" or (label is not None and is_json_media_type(label)):
        return
    got = f"got {shown(label)}" if label else "it is missing"
    raise ApiError(415, ("header", "Content-Type"), f"send JSON with Content-Type: {JSON_MEDIA_TYPES} "
                   f"({got}; with curl: -H 'Content-Type: application/json')", "unsupported_media_type")


def refuse_query_parameters(request: Request) -> None:
    """422 for a query string on a route that reads everything from its body: ignoring
    ``?model=x`` would answer with another model than the caller asked for."""
    if request.query_params:
        name = next(iter(request.query_params))
        loc = ("query", name) if name else ("query",)  # '?=x' has a value without a name
        raise ApiError(422, loc, f"this endpoint takes no query parameters (got {shown(name)}); send every "
                       "field in the JSON body", "query_not_accepted")


def content_codings(request: Request) -> list[str]:
    """Every coding the Content-Encoding headers name (any number of headers, comma-separated
    lists, any case), other than identity: the body's bytes are read as sent, never decoded."""
    return [coding.strip() for value in request.headers.getlist("content-encoding")
            for coding in value.split(",") if coding.strip().lower() not in ("", "identity")]


def check_identity_encoding(request: Request) -> None:
    """415 for a compressed (or otherwise encoded) body. OIP's infer refuses the same, as its
    protocol's 400."""
    codings = content_codings(request)
    if codings:
        raise ApiError(415, ("header", "Content-Encoding"), f"{shown(', '.join(codings))} bodies are not "
                       "accepted; send the body uncompressed (Content-Encoding: identity, or none)",
                       "unsupported_encoding")


def json_body(model: type[Model]) -> Callable[[Request], Coroutine[Any, Any, Model]]:
    """A dependency that reads the request's JSON body as ``model``; faults are 422s under ``body``."""

    async def read(request: Request) -> Model:
        refuse_query_parameters(request)
        check_json_content_type(request)
        check_identity_encoding(request)
        data = await parse(await request.body())
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise body_validation_error(exc) from None

    return read
