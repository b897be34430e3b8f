"""Writing small MNIST IDX files for the tests."""

import gzip
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray,
                gz: bool = False) -> None:
    prefix = {"train": "train", "test": "t10k"}[split]
    for kind, dims, array, magic in (("images", "idx3", images, 2051), ("labels", "idx1", labels, 2049)):
        data = idx_bytes(array, magic)
        name = f"{prefix}-{kind}-{dims}-ubyte"
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
