"""Error bodies (see :mod:`service.api.errors`) and the OpenAPI ``responses`` that document them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

ERROR_MEANINGS = {
    400: "Malformed Open Inference Protocol request (its error names the tensor and the fault).",
    401: "An API key is configured and the request's is missing or wrong.",
    404: "No model of that name.",
    408: "The request body did not arrive in full within the body timeout.",
    413: "The request body is over the byte limit.",
    415: "The body is not labelled or encoded as this endpoint reads it (the error names the header).",
    422: "The request is malformed or over a limit; each error names the field.",
    503: "The model (or, for probes, the default model) is not loaded.",
}


class ErrorItem(BaseModel):
    type: str = Field(description="Machine-readable kind of error.")
    loc: list[str | int] = Field(description="Where the fault lies, as FastAPI reports it.")
    field: str = Field(description="The same location as one path, e.g. `series[0].values[3]`.")
    msg: str = Field(description="What is wrong, in words.")


class ErrorBody(BaseModel):
    detail: list[ErrorItem]


class OipErrorBody(BaseModel):
    error: str = Field(description="What is wrong, naming the field.")


def error_responses(*codes: int, oip: bool = False) -> dict[int | str, dict[str, Any]]:
    model = OipErrorBody if oip else ErrorBody
    return {code: {"model": model, "description": ERROR_MEANINGS[code]} for code in codes}
