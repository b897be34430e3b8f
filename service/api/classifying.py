"""The work behind POST /classify and OIP infer: pixels checked and scaled, the classifier called.

Every refusal names the image and pixel (``images[3][12][7]``) or upload (``file[1]``) at fault.
"""

from __future__ import annotations

import numpy as np
import torch

from service.api.errors import ApiError, Loc
from service.api.metrics import Metrics, timed
from service.api.registry import ModelEntry
from service.model.classifier import Classifier
from service.model.digit_image import image_bytes_to_mnist


def _invalid(loc: Loc, msg: str, type: str) -> ApiError:
    return ApiError(422, loc, msg, type)


def check_count(count: int, limit: int, loc: Loc) -> None:
    if count > limit:
        raise _invalid(loc, f"{count} images; the limit is {limit} (setting ODECAST_MAX_IMAGES)",
                       "over_limit")


def scale_pixels(images: np.ndarray, locs: list[Loc]) -> np.ndarray:
    """(N, 28, 28) values by the documented rule -> float32 in [0, 1].

    An image with any value above 1 is 0..255 (whole numbers, divided by 255); else 0..1.
    """
    scaled = np.empty(images.shape, dtype=np.float32)
    for image, out, loc in zip(images, scaled, locs, strict=True):
        if image.max() > 1:
            bad = (image < 0) | (image > 255) | (image != np.round(image))
            rule = "an image with values above 1 is read as 0..255 and takes whole numbers from 0 to 255"
            scale = 255.0
        else:
            bad = image < 0
            rule = "pixel values are 0..1, or whole numbers 0..255"
            scale = 1.0
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise _invalid((*loc, row, col), f"{image[row, col]:g} is out of range: {rule}", "pixel_range")
        out[:] = image / scale
    return scaled


def decode_uploads(uploads: list[bytes], loc: Loc) -> np.ndarray:
    """PNG/JPEG files -> (N, 28, 28) float32 MNIST-style digits (see service.model.digit_image)."""
    digits = []
    for k, data in enumerate(uploads):
        try:
            digits.append(image_bytes_to_mnist(data))
        except ValueError as exc:
            raise _invalid((*loc, k) if len(uploads) > 1 else loc, str(exc), "image_invalid") from None
    return np.stack(digits)


def classify(entry: ModelEntry, images: np.ndarray, metrics: Metrics) -> tuple[np.ndarray, int]:
    """Probabilities (N, 10) for float32 images (N, 28, 28) in [0, 1], and the call's NFE."""
    model: Classifier = entry.model
    with timed("model"):
        probabilities, nfe = model.predict(torch.from_numpy(np.ascontiguousarray(images))[:, None])
    metrics.nfe.labels(entry.name).observe(nfe)
    return probabilities, nfe
