"""Accuracy of the bundled MNIST classifier on test digits rendered as users send them.

/classify reads uploads the way MNIST was made (service.model.digit_image) and JSON pixel arrays
as MNIST's own (inverted when their border is light). This renders MNIST test digits as photos
and canvases do (dark ink on a white page, tightly cropped, bold, with a scanner's frame on
all or some sides, with a page's shadow, as JSON with the colours inverted) and measures the
share labelled right; a framed page with no digit must be refused as empty.

    python benchmarks/classify_renderings.py [--mnist-dir ../shared/data/mnist] [--digits 300]

Prints a table and writes benchmarks/results/classify_renderings.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.api.classifying import scale_pixels  # noqa: E402
from service.model.classifier import Classifier  # noqa: E402
from service.model.digit_image import image_bytes_to_mnist  # noqa: E402
from training.data.mnist_idx import load_split  # noqa: E402


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def bold(digit: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).filter(ImageFilter.MaxFilter(size)))


def tight(digit: np.ndarray) -> np.ndarray:
    """Dark on white, cropped to the ink: every edge touches a stroke."""
    rows, cols = np.flatnonzero(digit.max(axis=1) > 50), np.flatnonzero(digit.max(axis=0) > 50)
    return 255 - digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def page(digit: np.ndarray, sides: str = "", width: int = 8, shadow: bool = False) -> np.ndarray:
    """Dark on a 108-px white page, the named sides (t, b, l, r) dark ``width`` px deep: black (a
    scanner's frame), or a ramp from grey to white (a page's shadow)."""
    margin = 40
    pixels = np.full((28 + 2 * margin, 28 + 2 * margin), 255, np.uint8)
    pixels[margin:margin + 28, margin:margin + 28] = 255 - digit
    ramp = np.linspace(60, 255, width).astype(np.uint8) if shadow else np.zeros(width, np.uint8)
    if "t" in sides:
        pixels[:width] = np.minimum(pixels[:width], ramp[:, None])
    if "b" in sides:
        pixels[-width:] = np.minimum(pixels[-width:], ramp[::-1, None])
    if "l" in sides:
        pixels[:, :width] = np.minimum(pixels[:, :width], ramp[None, :])
    if "r" in sides:
        pixels[:, -width:] = np.minimum(pixels[:, -width:], ramp[None, ::-1])
    return pixels


UPLOADS = {
    "MNIST as is (28x28 PNG)": lambda d: d,
    "dark on a white page": page,
    "tight crop": tight,
    "tight crop, bold (3x3)": lambda d: tight(bold(d, 3)),
    "frame on all sides, 8 px": lambda d: page(d, "tblr"),
    "frame on all sides, 2 px": lambda d: page(d, "tblr", 2),
    "frame on two sides (top, left)": lambda d: page(d, "tl"),
    "frame on three sides": lambda d: page(d, "tlr"),
    "shadow on one side, 15 px": lambda d: page(d, "l", 15, shadow=True),
    "shadow on two sides, 15 px": lambda d: page(d, "lb", 15, shadow=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "mnist-odenet"))
    parser.add_argument("--digits", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classify_renderings.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = load_split(args.mnist_dir, "test")
    chosen = np.random.default_rng(0).choice(len(split.labels), args.digits, replace=False)
    digits, labels = split.images[chosen], split.labels[chosen]
    classifier = Classifier.load(args.model_dir)

    def accuracy(images: np.ndarray) -> float:
        probabilities, _ = classifier.predict(torch.from_numpy(images)[:, None])
        return float(np.mean(np.asarray(probabilities).argmax(axis=1) == labels))

    results = {}
    for name, render in UPLOADS.items():
        images = np.stack([image_bytes_to_mnist(png(render(digit))) for digit in digits])
        results[f"upload: {name}"] = accuracy(images)
    locs = [("body", "images", k) for k in range(len(digits))]
    for name, pixels in (("JSON 0..255", digits), ("JSON 0..255, inverted (dark on white)", 255 - digits)):
        results[name] = accuracy(scale_pixels(pixels.astype(np.float64), locs))
    try:
        image_bytes_to_mnist(png(page(np.zeros((28, 28), np.uint8), "tblr")))
        blank = "given a label"
    except ValueError as exc:
        blank = f"refused: {exc}"
    for name, value in results.items():
        print(f"{name:45s} {value:.3f}")
    print(f"{'framed page with no digit':45s} {blank}")
    record = {"command": "python benchmarks/classify_renderings.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "python": platform.python_version(), "torch": torch.__version__,
              "model": classifier.version, "digits": args.digits, "accuracy": results,
              "framed page with no digit": blank}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
