"""Open Inference Protocol v2 inference bodies (``POST /v2/models/{name}/infer``).

Tensor data comes as JSON (``data``, nested or flat, row-major) or, with Triton's binary tensor
extension that tritonclient uses by default, as raw little-endian bytes after the JSON header
(``Inference-Header-Content-Length`` header; ``parameters.binary_data_size`` per input).
Answers are always JSON, which every OIP client reads.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.api.schemas.classify import EXAMPLE_DIGIT
from service.api.schemas.common import FailFastList

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


class RequestInput(BaseModel):
    name: str
    shape: FailFastList[Annotated[int, Field(strict=True)]]  # integers: not "1", 1.0, true
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="Row-major values, nested or flat; absent when the "
                                                     "tensor is sent as binary data.")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "42", "inputs": [{"name": INPUT_NAME, "shape": [1, 784], "datatype": "FP32",
                                "data": [value for row in EXAMPLE_DIGIT for value in row]}]}]})

    id: str | None = None
    parameters: dict[str, Any] | None = None
    # The first fault of a list only, as in the native bodies (service.api.schemas.common).
    inputs: FailFastList[RequestInput]
    outputs: FailFastList[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's id, when it gave one.")
    parameters: dict[str, Any] = Field(description="`nfe`: ODE function evaluations of the solve.")
    outputs: list[ResponseOutput]
