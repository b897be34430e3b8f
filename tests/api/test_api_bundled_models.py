"""The bundled models, through the API: spirals forecasts and MNIST accuracy.

Each test skips, saying why, while its checkpoint is not in models/ yet (they are trained
offline and committed; see README). Everything else in the suite uses tiny checkpoints that
the tests write themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.settings import BUNDLED_MODELS_DIR, Settings
from training.data.mnist_idx import load_split
from training.data.spirals import generate_spirals

MNIST_DIR = Path(os.environ.get("ODECAST_MNIST_DIR",
                                Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"))

# Held-out spirals: drawn with a seed the trainer does not use, observed at 100 points as the
# bundled model was trained. The bound is on the RMSE of the predictive mean against the clean
# curve over the 100 steps after each window (Chen et al., Table 2 protocol; the paper's latent
# ODE reaches 0.13-0.16 on a partly unstated protocol). The bundled model (f25dfab3d0fb) measured
# 0.174 on these spirals and 0.222 on its test split (the one before it, trained without
# backcasts, 0.167 and 0.189); repeating the last observation scores 2.95.
SPIRAL_SEED = 990_001
SPIRAL_RMSE_BOUND = 0.3
MNIST_IMAGES = 500
MNIST_ACCURACY_BOUND = 0.99


def bundled(name: str):
    present = (BUNDLED_MODELS_DIR / name / "config.json").is_file()
    return pytest.mark.skipif(not present, reason=f"models/{name} is not bundled yet (trained offline)")


@pytest.fixture(scope="module")
def bundled_client():
    with TestClient(create_app(Settings(models_dir=BUNDLED_MODELS_DIR))) as client:
        yield client


@bundled("spirals")
def test_bundled_spirals_forecast_held_out_spirals(bundled_client):
    spirals = generate_spirals(num_spirals=24, num_observed=100, seed=SPIRAL_SEED)
    body = {"model": "spirals", "num_samples": 32, "quantiles": [0.05, 0.95], "series": [
        {"id": s.id, "times": s.times.tolist(), "values": s.values.tolist(),
         "at": s.extra["future_times"].tolist()} for s in spirals]}
    answer = bundled_client.post("/forecast", json=body)
    assert answer.status_code == 200, answer.text
    forecasts = answer.json()["forecasts"]
    errors = np.concatenate([np.array(f["mean"]) - s.extra["future_values"]
                             for f, s in zip(forecasts, spirals, strict=True)])
    rmse = float(np.sqrt(np.mean(errors ** 2)))
    last_value = np.concatenate([s.values[-1] - s.extra["future_values"] for s in spirals])
    assert rmse < SPIRAL_RMSE_BOUND, f"held-out extrapolation RMSE {rmse:.3f}"
    assert rmse < 0.5 * float(np.sqrt(np.mean(last_value ** 2))), "no better than repeating the last value"
    assert all(f["kind"] == ["extrapolation"] * 100 for f in forecasts)


@bundled("mnist-odenet")
@pytest.mark.parametrize("inverted", [False, True])
def test_bundled_mnist_odenet_accuracy_through_the_api(bundled_client, inverted):
    """Also with every digit drawn dark on white, which the API inverts (it scored 10 %)."""
    split = load_split(MNIST_DIR, "test")
    images, labels = split.images[:MNIST_IMAGES], split.labels[:MNIST_IMAGES]
    if inverted:
        images = 255 - images
    predicted = []
    for start in range(0, MNIST_IMAGES, 50):  # 0..255 integers, as MNIST stores them
        answer = bundled_client.post("/classify", json={"model": "mnist-odenet",
                                                        "images": images[start:start + 50].tolist()})
        assert answer.status_code == 200, answer.text
        predicted += [p["label"] for p in answer.json()["predictions"]]
    accuracy = float(np.mean(np.array(predicted) == labels))
    assert accuracy >= MNIST_ACCURACY_BOUND, f"accuracy {accuracy:.3f} on the first {MNIST_IMAGES} images"


@bundled("mnist-odenet")
def test_the_documented_examples_get_the_digit_they_show(bundled_client):
    """The OpenAPI examples drew a blob the bundled model called 9 (p 0.54) and a bar it called 5."""
    schemas = bundled_client.get("/openapi.json").json()["components"]["schemas"]
    classify = bundled_client.post("/classify", json=schemas["ClassifyRequest"]["examples"][0]).json()
    infer = bundled_client.post("/v2/models/mnist-odenet/infer",
                                json=schemas["InferRequest"]["examples"][0]).json()
    assert classify["predictions"][0]["label"] == 1 and max(classify["predictions"][0]["probabilities"]) > 0.9
    probabilities = infer["outputs"][0]["data"]
    assert probabilities.index(max(probabilities)) == 1
