"""POST /classify: MNIST digits as JSON pixel arrays or as uploaded PNG/JPEG files.

The body is read by an async dependency (JSON or multipart, one route for both); the route
itself is a plain ``def``, so image decoding and torch run in the threadpool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api import classifying
from service.api.deps import MetricsDep, RegistryDep, SettingsDep, serving_model
from service.api.errors import ApiError, Loc, body_validation_error
from service.api.responses import FastJSONResponse
from service.api.schemas.classify import ClassifyRequest, ClassifyResponse
from service.api.schemas.common import error_responses
from service.model.classifier import KIND

router = APIRouter(tags=["classify"])

FORM_FIELDS = ("file", "model")
MULTIPART_SCHEMA = {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "One or more PNG or JPEG images of a digit, any size; each is converted "
                                "to a 28x28 grey image the way MNIST digits were made."},
        "model": {"type": "string", "description": "Classifier name; default: the server's."},
    },
}


@dataclass
class ClassifyInput:
    model: str | None
    pixels: np.ndarray | None = None   # (N, 28, 28) as sent in JSON, not yet scaled
    locs: tuple[Loc, ...] = ()         # where each JSON image sits in the body
    uploads: list[bytes] | None = None


async def read_classify_input(request: Request, settings: SettingsDep) -> ClassifyInput:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _read_multipart(request, settings.max_images)
    try:
        body = ClassifyRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise body_validation_error(exc) from None
    if body.images is not None:
        classifying.check_count(len(body.images), settings.max_images, ("body", "images"))
        locs = tuple(("body", "images", i) for i in range(len(body.images)))
        return ClassifyInput(body.model, np.asarray(body.images, dtype=np.float64), locs)
    return ClassifyInput(body.model, np.asarray([body.image], dtype=np.float64), (("body", "image"),))


async def _read_multipart(request: Request, max_images: int) -> ClassifyInput:
    form = await request.form(max_files=max_images + 1, max_fields=len(FORM_FIELDS))
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        raise ApiError(422, ("body", unknown[0]), f"unknown form field; expected {' and '.join(FORM_FIELDS)}",
                       "extra_forbidden")
    files = form.getlist("file")
    if not files:
        raise ApiError(422, ("body", "file"), "missing: upload a PNG or JPEG image as the 'file' part",
                       "missing")
    if not all(isinstance(item, UploadFile) for item in files):
        raise ApiError(422, ("body", "file"), "must be a file upload, not a text field", "file_type")
    classifying.check_count(len(files), max_images, ("body", "file"))
    model = form.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(422, ("body", "model"), "must be a text field", "string_type")
    return ClassifyInput(model, uploads=[await item.read() for item in files])


@router.post("/classify", response_model=ClassifyResponse, response_class=FastJSONResponse,
             responses=error_responses(401, 404, 413, 422, 503),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyRequest"}},
                 "multipart/form-data": {"schema": MULTIPART_SCHEMA}}}})
def classify(data: Annotated[ClassifyInput, Depends(read_classify_input)], registry: RegistryDep,
             settings: SettingsDep, metrics: MetricsDep) -> FastJSONResponse:
    """Classify handwritten digits: label, the 10 probabilities and the solve's NFE, per image.

    JSON pixel values: an image with any value above 1 is read as 0..255 (whole numbers),
    otherwise as 0..1; MNIST style, a white digit on black.
    """
    entry = serving_model(registry, data.model or settings.default_classifier, KIND, ("body", "model"),
                          named=data.model is not None)
    if data.uploads is not None:
        images = classifying.decode_uploads(data.uploads, ("body", "file"))
    else:
        images = classifying.scale_pixels(data.pixels, list(data.locs))
    probabilities, nfe = classifying.classify(entry, images, metrics)
    return FastJSONResponse({
        "model": entry.name, "model_version": entry.model.version,
        "predictions": [{"label": int(p.argmax()), "probabilities": p.tolist(), "nfe": nfe}
                        for p in probabilities],
    })
