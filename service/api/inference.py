"""Open Inference Protocol v2 tensors in and out of the MNIST classifier.

The one input, ``input``, is FP32 of shape [N, 1, 28, 28] or [N, 784] with values in [0, 1],
given as JSON ``data`` or as binary data after the JSON header (Triton's binary tensor
extension). The one output, ``probabilities``, is FP32 [N, 10]. Faults are 400s that name the
tensor field (``inputs[0].shape``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
from fastapi import Request
from pydantic import ValidationError

from service.api.errors import ApiError, Loc, body_validation_error, shown
from service.api.json_reading import parse
from service.api.requests import content_codings
from service.api.schemas.inference import INPUT_NAME, OUTPUT_NAME, InferRequest

SIDE = 28
SHAPES = ("[N, 1, 28, 28]", "[N, 784]")


@dataclass
class InferCall:
    request: InferRequest
    binary: bytes  # the bytes after the JSON header (empty without the binary extension)


def _bad(loc: Loc, msg: str, type: str = "invalid_tensor") -> ApiError:
    return ApiError(422, loc, msg, type)  # answered as 400 under /v2/ (errors.error_response)


async def read_infer_call(request: Request) -> InferCall:
    """The JSON header (all of the body, unless ``Inference-Header-Content-Length`` says less)."""
    codings = content_codings(request)
    if codings:
        raise _bad(("header", "Content-Encoding"), f"{shown(', '.join(codings))} bodies are not accepted; "
                   "send the body uncompressed", "unsupported_encoding")
    body = await request.body()
    declared = request.headers.get("inference-header-content-length")
    if declared is None:
        header, binary = body, b""
    elif declared.isascii() and declared.isdigit() and 0 < int(declared) <= len(body):  # not "²" (isdigit)
        header, binary = body[:int(declared)], body[int(declared):]
    else:
        raise _bad(("header", "Inference-Header-Content-Length"),
                   f"{shown(declared)} is not the JSON header's length: a byte count from 1 to the body's "
                   f"{len(body)}",
                   "invalid_header")
    try:
        return InferCall(InferRequest.model_validate(await parse(header)), binary)
    except ValidationError as exc:
        raise body_validation_error(exc) from None


def input_images(call: InferCall, max_images: int) -> np.ndarray:
    """The request's one input tensor as float32 images (N, 28, 28) in [0, 1]."""
    inputs = call.request.inputs
    if len(inputs) != 1:
        raise _bad(("body", "inputs"), f"{len(inputs)} input tensors; this model takes one, {INPUT_NAME!r}")
    tensor, loc = inputs[0], ("body", "inputs", 0)
    if tensor.name != INPUT_NAME:
        raise _bad((*loc, "name"), f"unknown input {tensor.name!r}; this model's input is {INPUT_NAME!r}")
    if tensor.datatype != "FP32":
        raise _bad((*loc, "datatype"), f"{tensor.datatype!r}; the input is FP32")
    shape = list(tensor.shape)
    if len(shape) not in (2, 4) or shape[1:] not in ([1, SIDE, SIDE], [SIDE * SIDE]) or shape[0] < 1:
        raise _bad((*loc, "shape"), f"{shape}; expected {' or '.join(SHAPES)} with N >= 1")
    if shape[0] > max_images:
        raise _bad((*loc, "shape"), f"{shape[0]} images; the limit is {max_images} (setting "
                                    "ODECAST_MAX_IMAGES)", "over_limit")
    values = _values(tensor, loc, call.binary)
    expected = shape[0] * SIDE * SIDE
    if values.size != expected:
        raise _bad((*loc, "data"), f"{values.size} values; shape {shape} needs {expected}")
    outside = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values > 1))
    if outside.size:
        k = int(outside[0])
        fault = "is not a finite number" if not np.isfinite(values[k]) else "is outside [0, 1]"
        raise _bad((*loc, "data", k), f"{float(values[k])!r} (image {k // (SIDE * SIDE)}) {fault}: FP32 "
                                      "pixels are 0..1", "pixel_range")
    return values.astype(np.float32).reshape(shape[0], SIDE, SIDE)


def _values(tensor, loc: Loc, binary: bytes) -> np.ndarray:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if type(size) is not int:
            raise _bad((*loc, "parameters", "binary_data_size"),
                       f"{json.dumps(size)} must be an integer: the byte count of the binary data")
        if size != len(binary):
            raise _bad((*loc, "parameters", "binary_data_size"),
                       f"{size}, but {len(binary)} bytes follow the JSON header")
        if size % 4:
            raise _bad((*loc, "parameters", "binary_data_size"),
                       f"{size} bytes is not a whole number of FP32 values")
        if tensor.data is not None:  # two tensors sent as one: which did the client mean?
            raise _bad((*loc, "data"), "given beside binary data (parameters.binary_data_size); send "
                                       "the values one way")
        return np.frombuffer(binary, dtype="<f4").astype(np.float64)
    if binary:
        raise _bad(("header", "Inference-Header-Content-Length"), f"{len(binary)} bytes follow the JSON "
                   "header, but no input declares parameters.binary_data_size: say what they are, or "
                   "send the JSON alone")
    if tensor.data is None:
        raise _bad((*loc, "data"), "missing: give the values as 'data', or as binary data with "
                                   "parameters.binary_data_size")
    return _json_values(tensor.data, (*loc, "data"))


def _json_values(data: list, loc: Loc) -> np.ndarray:
    """JSON ``data`` (flat or nested, row-major) -> float64 values, each checked to be a number.

    numpy alone would read ``true`` as 1.0 and ``"0.5"`` as 0.5, and fail on an integer too large
    for a float; so the leaves' types are checked first (in C: one object array, one set of types).
    A fault is located by its flat, row-major index, as the range check locates one.
    """
    ragged = "not a (nested) list of numbers of one shape: its lists differ in length or depth"
    try:
        leaves = np.asarray(data, dtype=object).ravel()
    except ValueError:
        raise _bad(loc, ragged) from None
    if not set(map(type, leaves)) <= {float, int}:
        k = next(k for k, value in enumerate(leaves) if type(value) not in (float, int))
        if isinstance(leaves[k], list):
            raise _bad(loc, ragged)
        kind = {type(None): "null", bool: "a boolean", str: "a string"}.get(type(leaves[k]), "an object")
        raise _bad((*loc, k), f"{kind} is not a number: FP32 data are numbers", "number_type")
    try:
        return leaves.astype(np.float64)
    except OverflowError:
        k = next(k for k, value in enumerate(leaves) if abs(value) > sys.float_info.max)
        raise _bad((*loc, k), f"an integer of {len(str(abs(leaves[k])))} digits is too large for a number; "
                              "FP32 pixels are 0..1", "pixel_range") from None


def check_outputs(call: InferCall) -> None:
    for j, output in enumerate(call.request.outputs or []):
        if output.name != OUTPUT_NAME:
            raise _bad(("body", "outputs", j, "name"), f"unknown output {output.name!r}; this model's output "
                                                       f"is {OUTPUT_NAME!r}")


def infer_response(name: str, version: str, call: InferCall, probabilities: np.ndarray, nfe: int) -> dict:
    answer = {"model_name": name, "model_version": version, "parameters": {"nfe": nfe},
              "outputs": [{"name": OUTPUT_NAME, "shape": list(probabilities.shape), "datatype": "FP32",
                           "data": probabilities.astype(np.float32).ravel().tolist()}]}
    if call.request.id is not None:
        answer["id"] = call.request.id
    return answer
