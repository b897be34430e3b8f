"""Bodies of POST /classify (JSON form; the multipart form is a ``file`` part, see the route).

Pixel values follow one rule, per image: **an image with any value above 1 is read as 0..255**
(whole numbers 0 to 255, divided by 255); otherwise values are read as 0..1. A 0..255 image
whose values are all 0 or 1 would be black anyway, so the rule never misreads a real digit.
An image whose border is mostly light (dark ink on white) is inverted, by the uploads' rule; unlike
an upload it is not otherwise rescaled or re-centred.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.schemas.common import FailFastList, RequestBody
from service.api.schemas.forecast import FiniteNumber

SIDE = 28
Row = Annotated[list[FiniteNumber], Field(min_length=SIDE, max_length=SIDE, fail_fast=True)]
Image = Annotated[list[Row], Field(min_length=SIDE, max_length=SIDE, fail_fast=True,
                                   description="28 rows of 28 pixel values: 0..1 floats, or 0..255 whole "
                                               "numbers (an image with any value above 1 is read as 0..255). "
                                               "White digit on black, as in MNIST; an image whose "
                                               "border is mostly light is inverted first.")]


# The documented examples' digit: a "1" as MNIST draws one, a stroke 3 px wide and 20 tall
# (the bundled model labels it 1 with p 0.999; a test keeps it so).
EXAMPLE_DIGIT = [[0.0] * SIDE] * 4 + [[0.0] * 13 + [1.0] * 3 + [0.0] * 12] * 20 + [[0.0] * SIDE] * 4


class ClassifyRequest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"image": EXAMPLE_DIGIT}]})

    model: str | None = Field(None, min_length=1, description="Classifier name (GET /models); when "
                                                              "absent, the server's default.")
    image: Image | None = Field(None, description="One image.")
    images: FailFastList[Image] | None = Field(
        None, min_length=1, description="Several images (up to the limit).")

    @model_validator(mode="after")
    def _one_of_image_or_images(self) -> ClassifyRequest:
        if (self.image is None) == (self.images is None):
            raise ValueError("send either 'image' (one 28x28 image) or 'images' (a list of them), not "
                             + ("both" if self.image is not None else "neither"))
        return self


class ImagePrediction(BaseModel):
    label: int = Field(description="The most probable digit.")
    probabilities: list[float] = Field(description="P(digit = 0..9); they sum to 1.")
    nfe: int = Field(description="ODE function evaluations of the solve this image was part of "
                                 "(a request's images are solved together; 0 for models without an ODE).")


class ClassifyResponse(BaseModel):
    model: str
    model_version: str
    predictions: list[ImagePrediction]
