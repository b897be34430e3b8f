"""The serving benchmark's baseline server: the same forecast as odecast's, with Server-Timing."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from benchmarks.least_server import create_least_app, with_server_timing
from benchmarks.serve_forecast import make_series, request_body, server_timing
from service.model.forecaster import Forecaster


def test_least_server_answers_as_odecast_does(models_dir, client):
    forecaster = Forecaster.load(models_dir / "tiny")
    rng = np.random.default_rng(3)
    body = request_body("tiny", [make_series(rng, 2, 12, 7), make_series(rng, 2, 9, 5)], 16)
    least = TestClient(with_server_timing(create_least_app(forecaster))).post("/forecast", json=body)
    ours = client.post("/forecast", json=body)
    assert least.status_code == ours.status_code == 200
    got, want = least.json(), ours.json()
    assert got["nfe"] == want["nfe"] and len(got["forecasts"]) == 2
    for mine, theirs in zip(got["forecasts"], want["forecasts"], strict=True):
        assert mine["at"] == theirs["at"] and mine["kind"] == theirs["kind"]
        for key in ("mean", "std"):
            np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-12)
        assert mine["quantiles"] == theirs["quantiles"]
    timing = server_timing(least.headers["Server-Timing"])
    assert 0 < timing["model"] <= timing["app"]
