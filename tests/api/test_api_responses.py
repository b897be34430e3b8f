"""Answers written by FastJSONResponse: the documented schema, numpy arrays, and orjson's gaps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.api.responses import FastJSONResponse
from service.api.schemas.forecast import ForecastResponse


def test_forecast_answer_is_the_documented_response_model(client):
    series = {"id": "s", "times": [0.0, 1.0, 2.5], "values": [[1.0, None], [0.5, 0.2], [0.1, 0.3]],
              "at": [-1, 0.5, 4.0, 3]}
    answer = client.post("/forecast", json={"series": [series], "quantiles": [0.1, 0.9]})
    assert answer.status_code == 200, answer.text
    body = json.loads(answer.content)
    assert ForecastResponse.model_validate(body).model_dump(mode="json") == body
    (forecast,) = body["forecasts"]
    assert forecast["at"] == [-1, 0.5, 4.0, 3]
    assert [type(t) for t in forecast["at"]] == [int, float, float, int]
    assert forecast["kind"] == ["backcast", "interpolation", "extrapolation", "extrapolation"]
    assert set(forecast["quantiles"]) == {"0.1", "0.9"}


def test_openapi_documents_the_forecast_answer(client):
    ok = client.get("/openapi.json").json()["paths"]["/forecast"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ForecastResponse"}


@pytest.mark.parametrize("content", [
    {"mean": np.arange(6.0).reshape(3, 2), "at": [1, 2.5, "2024-01-01T00:00:00Z"], "nfe": 3},
    {"mean": np.arange(6.0).reshape(3, 2).T, "nfe": 3},        # not C-contiguous: pydantic-core writes it
    {"at": [2**70, -(2**80)], "mean": np.ones((2, 1))},       # beyond 64 bits: pydantic-core writes it
    {"probabilities": np.float32([0.25, 0.75]), "label": 1},
    {"mean": np.array([np.nan, np.inf, 1.0]), "std": [float("nan")]},
    {"mean": np.array([np.nan, -np.inf]), "at": [2**70]},        # non-finite through pydantic-core
])
def test_numpy_arrays_and_what_orjson_refuses_come_out_as_plain_json(content):
    written = json.loads(FastJSONResponse(content).body)
    plain = {key: value.tolist() if isinstance(value, np.ndarray) else value
             for key, value in content.items()}
    non_finite_as_null = json.dumps(plain).replace("NaN", "null").replace("-Infinity", "null")
    assert written == json.loads(non_finite_as_null.replace("Infinity", "null"))
