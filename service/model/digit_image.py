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
3. invert when the background (the border, or the band inside a frame) is light;
4. stretch contrast between the background level and the brightest ink, and drop marks that
   touch the edge without leaving the outer band (a frame, a page's shadow);
5. crop to the bounding box of the ink, scale its longer side to 20 px, and paste it into
   28×28 with its centre of mass at pixel (14, 14), where MNIST's digits have theirs.

Failures raise :class:`ValueError` with a message a client can act on.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MAX_PIXELS = 4096 * 4096
WORK_SIDE = 1024  # an image is reduced until its longer side is below 2 * WORK_SIDE
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "I")  # modes Image.reduce averages correctly
INK_THRESHOLD = 0.2  # after contrast stretching, pixels above this count as ink
EDGE_BAND = 0.1  # the outer band, a tenth of each side: where the background is read, and frames sit
EDGE_GRID = 64  # cells a side on which marks along the edge are told from the digit
FRAMED_MIN_CELLS = 12  # narrower, an image (a tight crop) has no room for a frame, a margin and a digit
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


def _band_width(side: int) -> int:
    return max(1, round(EDGE_BAND * side))


def _outer(shape: tuple[int, int], rows: int, cols: int) -> np.ndarray:
    """A mask of the outer ``rows`` rows and ``cols`` columns at each side of an array of ``shape``."""
    mask = np.zeros(shape, dtype=bool)
    mask[:rows], mask[-rows:], mask[:, :cols], mask[:, -cols:] = True, True, True, True
    return mask


def _framed(outer: np.ndarray, behind: np.ndarray) -> bool:
    """Whether a side's outermost line is nearly all one level and the line ``behind`` it nearly
    all the other."""
    outer_dark, behind_dark = np.mean(outer <= 0.5), np.mean(behind <= 0.5)
    return bool((outer_dark >= 0.9 and behind_dark <= 0.1) or (outer_dark <= 0.1 and behind_dark >= 0.9))


def border_level(grey: np.ndarray) -> float:
    """The background's level: the median of the outermost pixels, unless a frame lines some of
    the image's sides (a scanner's border, a page's shadow): then the level just inside it.

    A side is framed when its outermost line is nearly all one level and the line a tenth of the
    image further in nearly all the other, the level of most of the image (the paper), the
    perpendicular bands left out: a thin line along the whole side, with paper behind it. A
    stroke along a tightly cropped digit's edge (the bar of a 7) is thicker than that or has the
    rest of the digit behind it, and ink behind an edge of paper is not a frame.
    """
    level = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    height, width = grey.shape
    rows, cols = _band_width(height), _band_width(width)
    if min(height, width) < 2 * FRAMED_MIN_CELLS:
        return level
    sides = [(grey[0, cols:-cols], grey[rows, cols:-cols]),
             (grey[-1, cols:-cols], grey[-1 - rows, cols:-cols]),
             (grey[rows:-rows, 0], grey[rows:-rows, cols]),
             (grey[rows:-rows, -1], grey[rows:-rows, -1 - cols])]
    behind_frames = [behind for outer, behind in sides if _framed(outer, behind)]
    if not behind_frames:                            # the usual case: no frame, no image-wide median
        return level
    step = max(1, max(height, width) // 256)
    paper_dark = float(np.median(grey[::step, ::step])) <= 0.5      # most of the image is paper
    inside = [behind for behind in behind_frames if (np.mean(behind <= 0.5) >= 0.9) == paper_dark]
    return float(np.median(np.concatenate(inside))) if inside else level


def without_edge_marks(ink: np.ndarray) -> np.ndarray:
    """``ink`` without marks that touch the image's edge and stay within its outer band: a
    scanner's frame, a page's shadow, specks along the border. Whatever touches the edge and
    reaches further in (a stroke of a tightly cropped digit) is kept, as is a small mark when
    nothing else would be left (a digit in a corner); marks along a side with nothing else are
    an empty image (:class:`ValueError`).

    Decided on a grid of at most ``EDGE_GRID`` cells a side (a cell is ink if any pixel in it
    is), where following a frame around the image takes a few hundred array passes at most.
    """
    mask = ink > INK_THRESHOLD
    height, width = mask.shape
    size = max(1, math.ceil(max(height, width) / EDGE_GRID))
    padded = np.zeros((math.ceil(height / size) * size, math.ceil(width / size) * size), dtype=bool)
    padded[:height, :width] = mask
    cells = padded.reshape(padded.shape[0] // size, size, padded.shape[1] // size, size).any(axis=(1, 3))
    band = _outer(cells.shape, _band_width(cells.shape[0]), _band_width(cells.shape[1]))
    marks = cells & _outer(cells.shape, 1, 1)
    if not marks.any() or min(cells.shape) < FRAMED_MIN_CELLS:  # nothing touches the edge (the usual
        return ink                                  # case), or no room for a frame, margin and digit
    while True:                                     # grow through ink, within the band
        grown = _dilated(marks) & cells & band
        if (grown == marks).all():
            break
        marks = grown
    if (_dilated(marks) & cells & ~band).any():
        return ink
    if not (cells & ~marks).any():  # only marks: a blank framed page has no digit, a small one in a corner
        rows, cols = np.flatnonzero(marks.any(axis=1)), np.flatnonzero(marks.any(axis=0))
        along_a_side = rows[-1] - rows[0] >= cells.shape[0] // 2 or cols[-1] - cols[0] >= cells.shape[1] // 2
        if along_a_side:
            raise ValueError("image is empty: nothing but marks along its edge (a frame or a shadow), or a "
                             "digit too close to them to tell apart: crop the picture to the digit")
        return ink
    erase = np.repeat(np.repeat(marks, size, axis=0), size, axis=1)[:height, :width]
    return np.where(erase, 0.0, ink)


def _dilated(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one cell in each of the eight directions."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def image_bytes_to_mnist(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes → float32 (28, 28) in [0, 1], white digit on black, MNIST-centred."""
    grey = decode_grey(data)
    if border_level(grey) > 0.5:
        grey = 1.0 - grey
    background = border_level(grey)
    peak = float(grey.max())
    if peak - background < MIN_CONTRAST:
        raise ValueError("image is empty: no digit stands out from the background")
    ink = without_edge_marks(np.clip((grey - background) / (peak - background), 0.0, 1.0))
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
