"""MNIST from the standard IDX files (LeCun et al.), gzipped or raw, with strict checks.

An IDX file is a big-endian header, ``0x0000``, a type byte (``0x08`` = unsigned byte), the
number of dimensions, one uint32 per dimension, then the data. MNIST's image files have magic
2051 (three dimensions: count, 28, 28) and its label files 2049 (one dimension: count). Every
check that fails raises :class:`MNISTFormatError` naming the file, so a truncated download or
a swapped file is reported instead of training on garbage.

Also here: the data fingerprint recorded in checkpoints (SHA-256 of the files), and the training
augmentation (random crop with zero padding), done for a whole batch at once in torch.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.model.checkpoint import sha256_file

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class MNISTFormatError(ValueError):
    """An MNIST IDX file is missing, truncated, or not what its name says."""


@dataclass(frozen=True)
class MNISTSplit:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64 in 0..9
    files: tuple[Path, Path]


def find_idx_file(directory: Path, split: str, kind: str) -> Path:
    """``train-images-idx3-ubyte`` and the ``.gz`` / ``train-images.idx3-ubyte`` spellings."""
    dims = "idx3" if kind == "images" else "idx1"
    stem = f"{SPLIT_PREFIX[split]}-{kind}"
    names = [f"{stem}-{dims}-ubyte", f"{stem}.{dims}-ubyte"]
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise MNISTFormatError(f"{directory / (names[0] + '.gz')}: missing (also looked for "
                           f"{', '.join(names)} with and without .gz in {directory})")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one unsigned-byte IDX file and check its magic number and length."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise MNISTFormatError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 8:
        raise MNISTFormatError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise MNISTFormatError(f"{path}: magic number {found}, expected {magic} "
                               f"({'images' if magic == IMAGES_MAGIC else 'labels'} file)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise MNISTFormatError(f"{path}: {len(raw)} bytes, but the header's shape {shape} "
                               f"needs {expected}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_split(directory: str | Path, split: str) -> MNISTSplit:
    """Load ``train`` (60k) or ``test`` (10k) images and labels from ``directory``."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"split must be one of {sorted(SPLIT_PREFIX)}, not {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise MNISTFormatError(f"{directory}: not a directory holding the MNIST IDX files")
    images_path = find_idx_file(directory, split, "images")
    labels_path = find_idx_file(directory, split, "labels")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise MNISTFormatError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise MNISTFormatError(f"{images_path} holds {len(images)} images but {labels_path} "
                               f"holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise MNISTFormatError(f"{labels_path}: label {int(labels.max())} is not a digit 0-9")
    return MNISTSplit(images, labels.astype(np.int64), (images_path, labels_path))


def fingerprint(files: list[Path]) -> dict[str, object]:
    """Each file's SHA-256, and one SHA-256 over them in the order given: the exact data trained on."""
    digests = {path.name: sha256_file(path) for path in files}
    combined = hashlib.sha256("".join(digests.values()).encode()).hexdigest()
    return {"fingerprint": combined, "files": digests}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad (N, C, H, W) with zeros and crop every image at its own random offset back to H×W."""
    if padding == 0:
        return images
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    rows = (dy + torch.arange(height)).view(n, 1, height, 1)
    cols = (dx + torch.arange(width)).view(n, 1, 1, width)
    batch = torch.arange(n).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]
