"""The work behind POST /classify and OIP infer: pixels checked and scaled, the classifier called.

Every refusal names the image and pixel (``images[3][12][7]``) or upload (``file[1]``) at fault.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass

import numpy as np
import torch
from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.api.errors import ApiError, Loc, body_validation_error, field_path
from service.api.json_reading import parse
from service.api.metrics import Metrics, timed
from service.api.registry import ModelEntry
from service.api.requests import is_json_media_type, media_type
from service.api.schemas.classify import ClassifyRequest
from service.model.classifier import Classifier
from service.model.digit_image import MIN_CONTRAST, border_level, image_bytes_to_mnist
from service.model.solver import SolverStepLimitError

FORM_FIELDS = ("file", "model")
# A value this little above 1 is float rounding in a 0..1 image (1.0000001), read as 1; a 0..255
# image has whole numbers, so none of its values is in (1, 1 + ONE_SLACK].
ONE_SLACK = 1e-6


@dataclass
class Upload:
    filename: str | None
    data: bytes

    def named(self, k: int) -> str:
        """How a message names it: its filename, else its place among the 'file' parts."""
        return repr(self.filename[:100]) if self.filename else f"upload {k}"


@dataclass
class ClassifyInput:
    model: str | None
    pixels: np.ndarray | None = None   # (N, 28, 28) as sent in JSON, not yet scaled
    locs: tuple[Loc, ...] = ()         # where each JSON image sits in the body
    uploads: list[Upload] | None = None


def _invalid(loc: Loc, msg: str, type: str) -> ApiError:
    return ApiError(422, loc, msg, type)


def check_count(count: int, limit: int, loc: Loc) -> None:
    if count > limit:
        raise _invalid(loc, f"{count} images; the limit is {limit} (setting ODECAST_MAX_IMAGES)",
                       "over_limit")


def scale_pixels(images: np.ndarray, locs: list[Loc]) -> np.ndarray:
    """(N, 28, 28) values by the documented rule -> float32 in [0, 1], white digit on black.

    An image with any value above 1 (beyond float rounding: ``ONE_SLACK``) is 0..255, whole
    numbers divided by 255; else 0..1. An image whose border is mostly light is inverted, by an
    upload's rule (:func:`~service.model.digit_image.border_level`; nothing else of an upload's
    rescaling and re-centring is applied to a JSON image): a digit drawn dark on white
    would otherwise get a confident wrong label, and no MNIST-style digit has a light border.
    An image whose pixels all lie within MIN_CONTRAST of each other has no digit, and is
    refused as an uploaded picture with no digit standing out from its background is.
    """
    scaled = np.empty(images.shape, dtype=np.float32)
    for image, out, loc in zip(images, scaled, locs, strict=True):
        if image.max() > 1 + ONE_SLACK:
            brightest = tuple(int(i) for i in np.unravel_index(image.argmax(), image.shape))
            bad = (image < 0) | (image > 255) | (image != np.round(image))
            rule = (f"the image is read as 0..255, whole numbers from 0 to 255, because "
                    f"{field_path((*loc, *brightest))} is {float(image[brightest])!r} (above 1)")
            scale = 255.0
        else:
            bad = image < 0
            rule = "pixel values are 0..1, or whole numbers 0..255"
            scale = 1.0
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            value = float(image[row, col])
            fault = "is not a whole number" if 0 <= value <= 255 else "is out of range"
            raise _invalid((*loc, row, col), f"{value!r} {fault}: {rule}", "pixel_range")
        out[:] = np.minimum(image / scale, 1.0)
        if out.max() - out.min() < MIN_CONTRAST:
            raise _invalid(loc, "image is empty: no digit stands out from the background (every pixel is "
                                f"within {MIN_CONTRAST} of {out.min():.3g}, on the 0..1 scale)",
                           "image_empty")
        if border_level(out) > 0.5:
            out[:] = 1.0 - out
    return scaled


def body_kind(content_type: str | None) -> str:
    """"json" or "multipart", by the Content-Type's media type (any case, any parameters); else 415.

    JSON is ``application/json`` or ``application/<anything>+json``, as /forecast reads it.
    """
    if content_type is not None and media_type(content_type) == "multipart/form-data":
        return "multipart"
    if content_type is not None and is_json_media_type(content_type):
        return "json"
    given = f"{content_type!r} is not accepted" if content_type else "missing"
    raise ApiError(415, ("header", "Content-Type"), f"{given}: send pixel arrays as application/json or "
                   "PNG/JPEG files as multipart/form-data", "unsupported_media_type")


async def read_json(body: bytes, max_images: int) -> ClassifyInput:
    """A JSON body (UTF-8, with or without a byte order mark) of one 'image' or a list of 'images'."""
    try:
        request = ClassifyRequest.model_validate(await parse(body))
    except ValidationError as exc:
        raise body_validation_error(exc) from None
    if request.images is None:
        pixels = np.asarray([request.image], dtype=np.float64)
        return ClassifyInput(request.model, pixels, (("body", "image"),))
    check_count(len(request.images), max_images, ("body", "images"))
    locs = tuple(("body", "images", i) for i in range(len(request.images)))
    return ClassifyInput(request.model, np.asarray(request.images, dtype=np.float64), locs)


async def read_form(request: Request, max_images: int) -> ClassifyInput:
    """A multipart body: 'file' parts (up to ``max_images``) and an optional 'model' field.

    Starlette's parser is called directly rather than through ``request.form``, which answers
    its faults as 400s naming no field.
    """
    try:
        async with aclosing(request.stream()) as stream:
            form = await MultiPartParser(request.headers, stream, max_files=max_images,
                                         max_fields=len(FORM_FIELDS)).parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise _invalid(("body", "file"), f"more than {max_images} files; the limit is {max_images} "
                           "(setting ODECAST_MAX_IMAGES)", "over_limit") from None
        if exc.message.startswith("Too many fields"):
            raise _invalid(("body",), f"more than {len(FORM_FIELDS)} text fields; the form takes 'file' "
                           "parts and one 'model' field", "extra_forbidden") from None
        reason = f"{exc.message} ({exc.__cause__})" if exc.__cause__ else exc.message
        raise _invalid(("body",), f"malformed multipart/form-data body: {reason}",
                       "multipart_invalid") from None
    try:
        return await _form_input(form)
    finally:
        await form.close()


async def _form_input(form) -> ClassifyInput:
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        raise _invalid(("body", unknown[0]), f"unknown form field; expected {' and '.join(FORM_FIELDS)}",
                       "extra_forbidden")
    files = form.getlist("file")
    if not files:
        raise _invalid(("body", "file"), "missing: upload a PNG or JPEG image as the 'file' part", "missing")
    if not all(isinstance(item, UploadFile) for item in files):
        raise _invalid(("body", "file"), "must be a file upload, not a text field", "file_type")
    models = form.getlist("model")
    if len(models) > 1 or not all(isinstance(model, str) and model for model in models):
        raise _invalid(("body", "model"), "must be one non-empty text field (or absent, for the server's "
                       "default classifier)", "string_type")
    return ClassifyInput(models[0] if models else None,
                         uploads=[Upload(item.filename, await item.read()) for item in files])


def decode_uploads(uploads: list[Upload], loc: Loc) -> np.ndarray:
    """PNG/JPEG files -> (N, 28, 28) float32 MNIST-style digits (see service.model.digit_image)."""
    digits = []
    for k, upload in enumerate(uploads):
        try:
            digits.append(image_bytes_to_mnist(upload.data))
        except ValueError as exc:
            raise _invalid((*loc, k) if len(uploads) > 1 else loc, f"{upload.named(k)}: {exc}",
                           "image_invalid") from None
    return np.stack(digits)


def classify(entry: ModelEntry, images: np.ndarray, metrics: Metrics) -> tuple[np.ndarray, int]:
    """Probabilities (N, 10) for float32 images (N, 28, 28) in [0, 1], and the call's NFE."""
    model: Classifier = entry.model
    try:
        with timed("model"):
            probabilities, nfe = model.predict(torch.from_numpy(np.ascontiguousarray(images))[:, None])
    except SolverStepLimitError as exc:  # a request's images are solved together: name them all
        raise ApiError(422, ("body",), f"{exc} (model {entry.name!r}, the images solved together)",
                       "solver_step_limit") from None
    metrics.nfe.labels(entry.name).observe(nfe)
    return probabilities, nfe
