"""PNG/JPEG uploads → MNIST-style 28×28 digits."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from service.api.settings import BUNDLED_MODELS_DIR
from service.model import digit_image
from service.model.classifier import Classifier
from service.model.digit_image import WORK_SIDE, decode_grey, image_bytes_to_mnist
from training.data.mnist_idx import load_split

SAMPLE = Path(__file__).parent / "data" / "mnist-sample"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo_of(digit: np.ndarray, scale: int = 6, offset: tuple[int, int] = (40, 90)) -> Image.Image:
    """A real MNIST digit enlarged, as dark ink on a light, off-centre, larger page."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    page = Image.new("L", (28 * scale + 150, 28 * scale + 100), 245)
    page.paste(big, offset)
    return page.convert("RGB")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def difference_up_to_a_pixel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest pixel difference once ``b`` is moved by at most one pixel each way: centring by
    the centre of mass rounds to whole pixels, so a centre near .5 may land either side."""
    return min(float(np.abs(a - np.roll(b, (dy, dx), axis=(0, 1))).max())
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("JPEG", {"quality": 85})])
def test_real_digit_round_trips(fmt, options):
    digits = load_split(SAMPLE, "test").images[:5]
    for digit in digits:
        result = image_bytes_to_mnist(encode(photo_of(digit), fmt, **options))
        assert result.shape == (28, 28) and result.dtype == np.float32
        assert 0.0 <= result.min() and result.max() <= 1.0
        assert correlation(result, digit / 255.0) > 0.85


def drawn_one(background: int, ink: int, mode: str = "L") -> Image.Image:
    image = Image.new(mode, (120, 200), background)
    ImageDraw.Draw(image).line([(70, 20), (50, 180)], fill=ink, width=12)
    return image


@pytest.mark.parametrize(("background", "ink"), [(255, 0), (0, 255), (200, 30)])
def test_drawn_stroke_is_normalised(background, ink):
    result = image_bytes_to_mnist(encode(drawn_one(background, ink), "PNG"))
    rows = np.flatnonzero(result.max(axis=1) > 0.3)
    cols = np.flatnonzero(result.max(axis=0) > 0.3)
    assert 18 <= rows[-1] - rows[0] + 1 <= 21  # the longer side is scaled to 20 px
    assert cols[-1] - cols[0] + 1 < 12  # aspect ratio kept: a "1" stays narrow
    ys, xs = np.indices(result.shape)
    assert abs((ys * result).sum() / result.sum() - 14.0) < 1.0  # centre of mass where MNIST has it
    assert abs((xs * result).sum() / result.sum() - 14.0) < 1.0
    assert result[0].max() == 0 and result[:, 0].max() == 0  # black background
    assert result.max() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("ink", [(0, 0, 0), (255, 255, 255)])
def test_transparent_canvas_drawing(ink):
    canvas = Image.new("RGBA", (120, 200), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).line([(70, 20), (50, 180)], fill=(*ink, 255), width=12)
    result = image_bytes_to_mnist(encode(canvas, "PNG"))
    expected = image_bytes_to_mnist(encode(drawn_one(0, 255), "PNG"))
    assert np.abs(result - expected).max() < 0.05


def test_sixteen_bit_png():
    image = Image.fromarray(np.asarray(drawn_one(255, 0), dtype=np.uint16) * 257)
    assert image.mode.startswith("I")
    result = image_bytes_to_mnist(encode(image, "PNG"))
    expected = image_bytes_to_mnist(encode(drawn_one(255, 0), "PNG"))
    assert np.abs(result - expected).max() < 0.05


@pytest.mark.parametrize(("data", "message"), [
    (b"", "image is empty"),
    (b"GIF89a" + bytes(100), "not a PNG or JPEG image"),
    (b"just some text", "not a PNG or JPEG image"),
])
def test_rejects_non_images(data, message):
    with pytest.raises(ValueError, match=message):
        image_bytes_to_mnist(data)


def test_rejects_truncated_png():
    data = encode(drawn_one(255, 0), "PNG")
    with pytest.raises(ValueError, match="corrupt or unsupported image"):
        image_bytes_to_mnist(data[: len(data) // 2])


@pytest.mark.parametrize("image", [Image.new("L", (50, 50), 255), Image.new("L", (50, 50), 0),
                                   Image.new("RGBA", (50, 50), (0, 0, 0, 0))])
def test_blank_images_are_empty(image):
    with pytest.raises(ValueError, match="image is empty"):
        image_bytes_to_mnist(encode(image, "PNG"))


def test_rejects_huge_images():
    with pytest.raises(ValueError, match="too large"):
        image_bytes_to_mnist(encode(Image.new("1", (4100, 4100), 0), "PNG"))


@pytest.mark.skipif(not (BUNDLED_MODELS_DIR / "mnist-odenet" / "config.json").is_file(),
                    reason="models/mnist-odenet is not bundled yet (trained offline)")
@pytest.mark.parametrize(("fmt", "index"), [("PNG", 0), ("JPEG", 1)])
def test_a_large_upload_is_reduced_before_the_float_work_and_reads_the_same(fmt, index, monkeypatch):
    """A 3790x3740 page costs about a tenth of a second, not a second, and gives the same digit."""
    digit = load_split(SAMPLE, "test").images[index]
    large = encode(photo_of(digit, scale=130, offset=(400, 300)), fmt)
    assert max(decode_grey(large).shape) < 2 * WORK_SIDE
    reduced = image_bytes_to_mnist(large)
    with monkeypatch.context() as unreduced:
        unreduced.setattr(digit_image, "WORK_SIDE", 10**6)
        assert difference_up_to_a_pixel(reduced, image_bytes_to_mnist(large)) < 0.02
    small = image_bytes_to_mnist(encode(photo_of(digit), fmt))
    classifier = Classifier.load(BUNDLED_MODELS_DIR / "mnist-odenet")
    probabilities, _ = classifier.predict(torch.from_numpy(np.stack([reduced, small]))[:, None])
    assert probabilities[0].argmax() == probabilities[1].argmax()


@pytest.mark.parametrize("mode", ["1", "P", "RGBA", "I;16"])
def test_large_images_of_every_mode_are_reduced(mode, monkeypatch):
    """Palette indices, 1-bit and 16-bit pixels are converted before they are averaged."""
    page = drawn_one(255, 0).resize((2400, 4000))
    image = page.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(page, np.uint16) * 257)
    data = encode(image, "PNG")
    reduced = image_bytes_to_mnist(data)
    monkeypatch.setattr(digit_image, "WORK_SIDE", 10**6)
    assert difference_up_to_a_pixel(reduced, image_bytes_to_mnist(data)) < 0.05


def with_marks(image: Image.Image, marks: str) -> Image.Image:
    """``image`` with a 3-px dark frame, a 4-px shadow down its left edge, a 6-px dark band along two
    or three of its sides, or specks on its edge."""
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    width, height = marked.size
    if marks == "frame":
        draw.rectangle([0, 0, width - 1, height - 1], outline=(0, 0, 0), width=3)
    elif marks == "shadow":
        draw.rectangle([0, 0, 3, height - 1], fill=(20, 20, 20))
    elif marks in ("two sides", "three sides"):  # a scanner's offset: dark along some edges only
        draw.rectangle([0, 0, width - 1, 5], fill=(0, 0, 0))
        draw.rectangle([0, 0, 5, height - 1], fill=(0, 0, 0))
        if marks == "three sides":
            draw.rectangle([width - 6, 0, width - 1, height - 1], fill=(0, 0, 0))
    else:
        for x, y in ((0, 40), (width - 2, 7), (100, height - 2)):
            draw.rectangle([x, y, x + 1, y + 1], fill=(0, 0, 0))
    return marked


@pytest.mark.parametrize("marks", ["frame", "shadow", "specks", "two sides", "three sides"])
def test_marks_along_the_edge_are_not_ink(marks):
    """A scanner's frame made the border dark, so the page was not inverted; a page's shadow was
    cropped with the digit: a probe's framed digits were 16 % right."""
    for digit in load_split(SAMPLE, "test").images[:5]:
        clean = image_bytes_to_mnist(encode(photo_of(digit), "PNG"))
        marked = image_bytes_to_mnist(encode(with_marks(photo_of(digit), marks), "PNG"))
        assert difference_up_to_a_pixel(marked, clean) < 0.05


def test_a_digit_that_touches_the_edge_is_kept_whole(monkeypatch):
    """Cropped to its ink, a digit's strokes touch every edge but reach past the outer band, so
    they are the digit, not a frame; and its outermost pixels still give the background (a
    tight 0 has as much ink as paper a little further in). The answer is what it was before
    frames were looked for."""
    tight = []
    for digit in load_split(SAMPLE, "test").images[:10]:
        rows, cols = np.flatnonzero(digit.max(axis=1) > 50), np.flatnonzero(digit.max(axis=0) > 50)
        tight.append(encode(Image.fromarray(255 - digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]), "PNG"))
    now = [image_bytes_to_mnist(data) for data in tight]
    monkeypatch.setattr(digit_image, "without_edge_marks", lambda ink: ink)
    monkeypatch.setattr(digit_image, "border_level", lambda grey: float(np.median(np.concatenate(
        [grey[0], grey[-1], grey[:, 0], grey[:, -1]]))))
    for data, result in zip(tight, now, strict=True):
        np.testing.assert_array_equal(result, image_bytes_to_mnist(data))


def test_a_framed_page_with_nothing_in_it_is_empty():
    """It was given a confident label: the frame, all that was left, was read as the digit."""
    page = with_marks(Image.new("RGB", (200, 160), (245, 245, 245)), "frame")
    with pytest.raises(ValueError, match="image is empty: nothing but marks along its edge"):
        image_bytes_to_mnist(encode(page, "PNG"))
