"""POST /v2/models/{name}/infer: the classifier over the Open Inference Protocol v2, so standard
OIP clients (tritonclient's HTTP client, KServe's InferenceRESTClient) can call it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.api import classifying, inference
from service.api.deps import MetricsDep, RegistryDep, SettingsDep, serving_model
from service.api.responses import FastJSONResponse
from service.api.schemas.common import error_responses
from service.api.schemas.inference import InferResponse
from service.model.classifier import KIND

router = APIRouter(prefix="/v2", tags=["inference (Open Inference Protocol v2)"])


@router.post("/models/{name}/infer", response_model=InferResponse, response_class=FastJSONResponse,
             responses=error_responses(400, 401, 404, 408, 413, 503, oip=True),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}}}})
def infer(name: str, call: Annotated[inference.InferCall, Depends(inference.read_infer_call)],
          registry: RegistryDep, settings: SettingsDep, metrics: MetricsDep) -> FastJSONResponse:
    """Class probabilities for FP32 images [N, 1, 28, 28] or [N, 784] with values in [0, 1]."""
    entry = serving_model(registry, name, KIND, ("path", "name"))
    images = inference.input_images(call, settings.max_images)
    inference.check_outputs(call)
    probabilities, nfe = classifying.classify(entry, images, metrics)
    answer = inference.infer_response(entry.name, entry.model.version, call, probabilities, nfe)
    return FastJSONResponse(answer)
