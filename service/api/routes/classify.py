"""POST /classify: MNIST digits as JSON pixel arrays or as uploaded PNG/JPEG files.

The body is read by an async dependency (JSON or multipart, one route for both); the route
itself is a plain ``def``, so image decoding and torch run in the threadpool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service.api import classifying
from service.api.classifying import ClassifyInput
from service.api.deps import MetricsDep, RegistryDep, SettingsDep, serving_model
from service.api.requests import check_identity_encoding, content_type, refuse_query_parameters
from service.api.responses import FastJSONResponse
from service.api.schemas.classify import ClassifyResponse
from service.api.schemas.common import ErrorBody, error_responses
from service.model.classifier import KIND

router = APIRouter(tags=["classify"])

MULTIPART_SCHEMA = {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "One or more PNG or JPEG images of a digit, any size; each is converted "
                                "to a 28x28 grey image the way MNIST digits were made."},
        "model": {"type": "string", "description": "Classifier name; default: the server's."},
    },
}


async def read_classify_input(request: Request, settings: SettingsDep) -> ClassifyInput:
    refuse_query_parameters(request)
    check_identity_encoding(request)
    if classifying.body_kind(content_type(request)) == "multipart":
        return await classifying.read_form(request, settings.max_images)
    return await classifying.read_json(await request.body(), settings.max_images)


@router.post("/classify", response_model=ClassifyResponse, response_class=FastJSONResponse,
             responses={**error_responses(401, 404, 408, 413, 422, 503),
                        415: {"model": ErrorBody, "description": "The Content-Type is neither JSON nor "
                                                                 "multipart/form-data."}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyRequest"}},
                 "multipart/form-data": {"schema": MULTIPART_SCHEMA}}}})
def classify(data: Annotated[ClassifyInput, Depends(read_classify_input)], registry: RegistryDep,
             settings: SettingsDep, metrics: MetricsDep) -> FastJSONResponse:
    """Classify handwritten digits: label, the 10 probabilities and the solve's NFE, per image.

    JSON pixel values: an image with any value above 1 is read as 0..255 (whole numbers),
    otherwise as 0..1; MNIST style, a white digit on black.
    """
    entry = serving_model(registry, data.model, KIND, ("body", "model"), default=settings.default_classifier)
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
