"""Send a real /forecast and a real /classify to a running odecast container and check the answers.

The container must answer what this checkout's code answers in-process on the same checkpoints:
that shows the image holds the tested code, that its dependencies compute the same numbers and
that the models arrived intact. The classifier must also read real MNIST test digits, sent as PNG
uploads, as the digits they are. Both requests use the server's default models.

    python scripts/container_smoke_check.py http://127.0.0.1:18000 models/
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.api.settings import Settings
from training.data.mnist_idx import load_split
from training.data.spirals import generate_spirals

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("ODECAST_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
DIGITS = 10
DIGITS_CORRECT = 9
# Threads and library builds differ between the container and this process, and an adaptive
# solver may then take slightly different steps: answers agree to the solver's tolerance.
RTOL, ATOL = 1e-3, 1e-4


def forecast_request() -> dict:
    """Two spirals, asked inside their observed window and beyond it."""
    series = []
    for spiral in generate_spirals(num_spirals=2, num_observed=30, seed=990_002):
        inside = (spiral.times[:-1] + np.diff(spiral.times) / 2)[::6]
        beyond = spiral.extra["future_times"][::10]
        series.append({"id": spiral.id, "times": spiral.times.tolist(), "values": spiral.values.tolist(),
                       "at": np.concatenate([inside, beyond]).tolist()})
    return {"series": series, "quantiles": [0.1, 0.9], "num_samples": 16, "seed": 3}


def png_digits() -> tuple[list[tuple[str, tuple[str, bytes, str]]], np.ndarray]:
    """The first MNIST test digits as PNG uploads (multipart ``file`` parts), and their labels."""
    split = load_split(MNIST_DIR, "test")
    files = []
    for index, pixels in enumerate(split.images[:DIGITS]):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        files.append(("file", (f"digit-{index}.png", buffer.getvalue(), "image/png")))
    return files, split.labels[:DIGITS]


def check_same(served: dict, expected: dict, keys: tuple[str, ...], what: str) -> None:
    for key in keys:
        got, want = np.asarray(served[key], dtype=float), np.asarray(expected[key], dtype=float)
        if got.shape != want.shape or not np.all(np.isfinite(got)):
            sys.exit(f"{what}: {key} has shape {got.shape} (finite: {np.all(np.isfinite(got))}); "
                     f"in-process {want.shape}")
        if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
            sys.exit(f"{what}: {key} differs from the in-process answer by up to "
                     f"{np.max(np.abs(got - want)):.3g}")


def check_forecast(container: httpx.Client, local: TestClient) -> None:
    body = forecast_request()
    served, expected = (client.post("/forecast", json=body) for client in (container, local))
    if served.status_code != 200:
        sys.exit(f"/forecast answered {served.status_code}: {served.text[:500]}")
    served, expected = served.json(), expected.json()
    if (served["model"], served["model_version"]) != (expected["model"], expected["model_version"]):
        sys.exit(f"/forecast used {served['model']}@{served['model_version']}, "
                 f"expected {expected['model']}@{expected['model_version']}")
    for index, (got, want) in enumerate(zip(served["forecasts"], expected["forecasts"], strict=True)):
        if got["at"] != want["at"] or got["kind"] != want["kind"]:
            sys.exit(f"/forecast series {index}: times or kinds differ from the in-process answer")
        check_same(got, want, ("mean", "std"), f"/forecast series {index}")
        check_same(got["quantiles"], want["quantiles"], tuple(want["quantiles"]), f"/forecast series {index}")
    kinds = {kind for forecast in served["forecasts"] for kind in forecast["kind"]}
    print(f"/forecast: {served['model']}@{served['model_version']}, {len(served['forecasts'])} series, "
          f"kinds {sorted(kinds)}, nfe {served['nfe']}: same as in-process")


def check_classify(container: httpx.Client, local: TestClient) -> None:
    files, labels = png_digits()
    served, expected = container.post("/classify", files=files), local.post("/classify", files=files)
    if served.status_code != 200:
        sys.exit(f"/classify answered {served.status_code}: {served.text[:500]}")
    served, expected = served.json(), expected.json()
    got = np.array([p["label"] for p in served["predictions"]])
    if not np.array_equal(got, [p["label"] for p in expected["predictions"]]):
        sys.exit(f"/classify labels {got.tolist()} differ from the in-process answer")
    check_same({"p": [p["probabilities"] for p in served["predictions"]]},
               {"p": [p["probabilities"] for p in expected["predictions"]]}, ("p",), "/classify")
    correct = int(np.sum(got == labels))
    if correct < DIGITS_CORRECT:
        sys.exit(f"/classify read {correct} of {DIGITS} MNIST test digits right: {got.tolist()} "
                 f"for {labels.tolist()}")
    print(f"/classify: {served['model']}@{served['model_version']}, {correct}/{DIGITS} PNG digits right: "
          f"same as in-process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the container's base URL")
    parser.add_argument("models_dir", type=Path, help="the checkpoints the container serves")
    args = parser.parse_args()
    with (httpx.Client(base_url=args.url, timeout=120) as container,
          TestClient(create_app(Settings(models_dir=args.models_dir))) as local):
        check_forecast(container, local)
        check_classify(container, local)


if __name__ == "__main__":
    main()
