"""Turn an uploaded PNG/JPEG of a handwritten digit into an MNIST-style 28×28 image.

MNIST digits are white strokes on black, size-normalised so the longer side of the digit's
bounding box is 20 px (aspect kept), then placed in a 28×28 frame so that the centre of mass
of the ink sits at the centre (LeCun et al.). A photo or a canvas drawing is usually dark ink on
a light background, at another size and position, so we:

1. decode with Pillow (PNG or JPEG only, EXIF rotation applied, pixel count bounded), and
   shrink an image larger than 2 x ``WORK_SIDE`` by a whole factor (box average; a JPEG is
   decoded at reduced scale): the digit ends up 20 px tall, so nothing it needs is lost, and a
   16-megapixel upload costs a tenth of a second rather than a second of float arithmetic;
2. flatten transparency onto a background that contrasts with the strokes, take luminance;
3. invert when the border (the background) is light;
4. stretch contrast between the background level and the brightest ink;
5. crop to the bounding box of the ink, scale its longer side to 20 px, and paste it into
   28×28 with its centre of mass at pixel (14, 14), where MNIST's digits have theirs.

Failures raise :class:`ValueError` with a message a client can act on.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MAX_PIXELS = 4096 * 4096
WORK_SIDE = 1024  # an image is reduced until its longer side is below 2 * WORK_SIDE
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "I")  # modes Image.reduce averages correctly
INK_THRESHOLD = 0.2  # after contrast stretching, pixels above this count as ink
MIN_CONTRAST = 0.1  # a brightest pixel closer than this to the background means "no digit"
DIGIT_BOX = 20
FRAME = 28


def decode_grey(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to luminance in [0, 1], transparency flattened; shape (H, W)."""
    if not data:
        raise ValueError("image is empty (0 bytes)")
    if not (data.startswith(PNG_SIGNATURE) or data.startswith(JPEG_SIGNATURE)):
        raise ValueError("not a PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"image is too large ({width}x{height}); at most {MAX_PIXELS} pixels")
            image = _reduced(ImageOps.exif_transpose(_drafted(image)))
            if image.mode.startswith("I"):
                raw = np.asarray(image, dtype=np.float64)
                return raw / (65535.0 if raw.max() > 255 else 255.0)
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    except UnidentifiedImageError:  # its message shows the BytesIO object's address
        raise ValueError("not a PNG or JPEG image: it begins like one, but Pillow cannot read it") from None
    except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"corrupt or unsupported image ({exc})") from exc
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
    alpha = rgba[..., 3]
    if alpha.min() < 1.0:
        if alpha.max() == 0.0:
            raise ValueError("image is empty (fully transparent)")
        strokes_dark = np.average(grey, weights=alpha) < 0.5
        background = 1.0 if strokes_dark else 0.0
        grey = alpha * grey + (1.0 - alpha) * background
    return grey


def _drafted(image: Image.Image) -> Image.Image:
    """A JPEG set to decode at 1/2, 1/4 or 1/8 scale, its longer side still at least WORK_SIDE."""
    if image.format == "JPEG" and max(image.size) >= 2 * WORK_SIDE:
        ratio = WORK_SIDE / max(image.size)
        image.draft(image.mode, (int(image.width * ratio) + 1, int(image.height * ratio) + 1))
    return image


def _reduced(image: Image.Image) -> Image.Image:
    """``image`` shrunk by the whole factor that brings its longer side under 2 * WORK_SIDE."""
    factor = max(image.size) // WORK_SIDE
    if factor < 2:
        return image
    if image.mode not in REDUCIBLE_MODES:  # palette indices and 1-bit pixels cannot be averaged
        image = image.convert("I" if image.mode.startswith("I") else "RGBA")
    return image.reduce(factor)  # premultiplies alpha, so transparent pixels add no colour


def border_level(grey: np.ndarray) -> float:
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border))


def image_bytes_to_mnist(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes → float32 (28, 28) in [0, 1], white digit on black, MNIST-centred."""
    grey = decode_grey(data)
    if border_level(grey) > 0.5:
        grey = 1.0 - grey
    background = border_level(grey)
    peak = float(grey.max())
    if peak - background < MIN_CONTRAST:
        raise ValueError("image is empty: no digit stands out from the background")
    ink = np.clip((grey - background) / (peak - background), 0.0, 1.0)
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    digit = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    box = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)

    mass = box.sum()
    ys, xs = np.indices(box.shape)
    centre_y, centre_x = (ys * box).sum() / mass, (xs * box).sum() / mass
    top = int(np.clip(round(FRAME / 2 - centre_y), 0, FRAME - box.shape[0]))
    left = int(np.clip(round(FRAME / 2 - centre_x), 0, FRAME - box.shape[1]))
    frame = np.zeros((FRAME, FRAME), dtype=np.float32)
    frame[top:top + box.shape[0], left:left + box.shape[1]] = box
    return frame
