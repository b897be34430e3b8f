"""The MNIST IDX reader: both encodings, both spellings, and every way a file can be wrong."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.mnist_files import idx_bytes, write_split
from training.data.mnist_idx import (
    MNISTFormatError,
    fingerprint,
    load_split,
    random_crop,
    read_idx,
    to_tensor,
)

SAMPLE = Path(__file__).parent / "data" / "mnist-sample"
FULL = Path(os.environ.get("ODECAST_MNIST_DIR",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"))


def random_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28)), rng.integers(0, 10, count)


@pytest.mark.parametrize("gz", [True, False])
def test_gzipped_and_raw_read_the_same(tmp_path, gz):
    images, labels = random_digits(7)
    write_split(tmp_path, "train", images, labels, gz)
    split = load_split(tmp_path, "train")
    assert split.images.shape == (7, 28, 28) and split.images.dtype == np.uint8
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)
    assert split.labels.dtype == np.int64


def test_committed_sample_reads():
    split = load_split(SAMPLE, "test")
    assert split.images.shape == (600, 28, 28)
    assert split.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the first t10k labels
    assert set(split.labels.tolist()) == set(range(10))


@pytest.mark.skipif(not FULL.is_dir(), reason="full MNIST not available")
def test_full_dataset_counts():
    assert load_split(FULL, "test").images.shape == (10_000, 28, 28)
    assert load_split(FULL, "train").labels.shape == (60_000,)


def test_dotted_spelling_is_found(tmp_path):
    images, labels = random_digits(3)
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(images, 2051))
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    assert len(load_split(tmp_path, "test").labels) == 3


def test_missing_file_is_named(tmp_path):
    images, labels = random_digits(3)
    write_split(tmp_path, "train", images, labels, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MNISTFormatError, match="train-labels-idx1-ubyte.gz: missing"):
        load_split(tmp_path, "train")


def test_missing_directory(tmp_path):
    with pytest.raises(MNISTFormatError, match="not a directory"):
        load_split(tmp_path / "nowhere", "train")


def test_swapped_files_fail_on_magic(tmp_path):
    images, labels = random_digits(3)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(labels, 2049))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(images, 2051))
    with pytest.raises(MNISTFormatError, match=r"t10k-images-idx3-ubyte: magic number 2049, expected 2051"):
        load_split(tmp_path, "test")


def test_truncated_file(tmp_path):
    images, _ = random_digits(3)
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(images, 2051)[:-10])
    with pytest.raises(MNISTFormatError, match="truncated or corrupt"):
        read_idx(path, 2051)


def test_truncated_gzip(tmp_path):
    images, _ = random_digits(3)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(images, 2051))[:-20])
    with pytest.raises(MNISTFormatError, match="cannot read"):
        read_idx(path, 2051)


def test_count_mismatch(tmp_path):
    images, labels = random_digits(4)
    write_split(tmp_path, "test", images, labels[:3], gz=False)
    with pytest.raises(MNISTFormatError, match="holds 4 images but .* holds 3 labels"):
        load_split(tmp_path, "test")


def test_label_out_of_range(tmp_path):
    images, labels = random_digits(2)
    labels[1] = 12
    write_split(tmp_path, "test", images, labels, gz=False)
    with pytest.raises(MNISTFormatError, match="label 12"):
        load_split(tmp_path, "test")


def test_wrong_image_size(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 32, 32)), 2051))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2), 2049))
    with pytest.raises(MNISTFormatError, match=r"images are \(32, 32\)"):
        load_split(tmp_path, "test")


def test_fingerprint_changes_with_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    first = fingerprint([a, b])
    assert first["files"]["b"] == hashlib.sha256(b"two").hexdigest()
    assert len(first["fingerprint"]) == 64 and fingerprint([a, b]) == first
    b.write_bytes(b"three")
    assert fingerprint([a, b])["fingerprint"] != first["fingerprint"]


def test_random_crop_shifts_each_image_within_padding():
    images = torch.zeros(64, 1, 28, 28)
    images[:, 0, 10, 12] = 1.0  # one lit pixel per image
    crops = random_crop(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == images.shape
    ys, xs = torch.nonzero(crops[:, 0] == 1.0, as_tuple=True)[1:]
    assert len(ys) == 64  # a pixel 4 px from any border is never cut off
    assert (ys - 10).abs().max() <= 4 and (xs - 12).abs().max() <= 4
    assert len(set(zip(ys.tolist(), xs.tolist(), strict=True))) > 20  # offsets differ per image


def test_to_tensor_scales_to_unit_interval():
    tensor = to_tensor(np.array([[[0] * 28] * 27 + [[255] * 28]], dtype=np.uint8))
    assert tensor.shape == (1, 1, 28, 28) and tensor.dtype == torch.float32
    assert tensor.min() == 0.0 and tensor.max() == 1.0
