"""FastJSONRequest reads every body as json.loads does, only faster."""

import asyncio
import json
import math

import pytest

from service.api import requests
from service.api.requests import FastJSONRequest

orjson_loads = requests.orjson.loads


def parse(body: bytes):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    request = FastJSONRequest({"type": "http", "method": "POST", "headers": []}, receive)
    return asyncio.run(request.json())


@pytest.mark.parametrize("body", [
    b'{"series": [{"times": [0, 0.37, 1.9], "values": [[1.0, null], [2, 3e-5]], "at": ["2024-01-01"]}]}',
    '{"id": "série \\u00e9", "x": [-0.0, 1e308, 5e-324]}'.encode(),
    json.dumps({"big": 2**70, "neg": -(2**64)}).encode(),   # beyond orjson's 64-bit integers
    '{"a": [1, 2]}'.encode("utf-16"),                     # not UTF-8: orjson refuses, json reads it
])
def test_bodies_read_as_json_loads_reads_them(body):
    assert parse(body) == json.loads(body)


def test_non_finite_literals_reach_validation():
    parsed = parse(b'{"values": [NaN, Infinity, -Infinity]}')
    assert math.isnan(parsed["values"][0]) and parsed["values"][1:] == [math.inf, -math.inf]


def test_malformed_json_raises_json_loads_error():
    with pytest.raises(json.JSONDecodeError) as error:
        parse(b'{"series": [')
    assert error.value.pos == 12


def test_forecast_reads_its_body_through_it(client, monkeypatch):
    bodies = []

    def loads(body):
        bodies.append(body)
        return orjson_loads(body)

    monkeypatch.setattr(requests.orjson, "loads", loads)
    series = {"times": [0.0, 1.0], "values": [[1.0, 2.0], [0.5, 1.5]], "at": [2.0]}
    assert client.post("/forecast", json={"series": [series], "num_samples": 2}).status_code == 200
    assert len(bodies) == 1 and json.loads(bodies[0])["series"] == [series]
