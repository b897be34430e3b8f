"""Classifier.load / predict, and the checkpoints it refuses."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from service.model.checkpoint import CheckpointError, save_checkpoint
from service.model.classifier import KIND, Classifier
from service.model.mnist_nets import build_classifier, complete_architecture

torch.set_num_threads(1)


def write(directory, arch, kind=KIND, state=None, **extra):
    model = build_classifier(arch)
    config = {"architecture": complete_architecture(arch), "metrics": {"test_accuracy": 0.5}, **extra}
    save_checkpoint(directory, kind, state if state is not None else model.state_dict(), config)
    return model


@pytest.mark.parametrize("name", ["odenet", "mlp"])
def test_load_and_predict(tmp_path, name):
    model = write(tmp_path / "ckpt", {"name": name})
    classifier = Classifier.load(tmp_path / "ckpt", name="digits")
    assert classifier.name == "digits" and classifier.architecture == name
    assert classifier.metrics == {"test_accuracy": 0.5}
    assert len(classifier.version) == 12
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    probabilities, nfe = classifier.predict(images)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(model(images), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert (nfe > 0) == (name == "odenet")


def test_name_defaults_to_directory(tmp_path):
    write(tmp_path / "mnist-mlp", {"name": "mlp"})
    assert Classifier.load(tmp_path / "mnist-mlp").name == "mnist-mlp"


@pytest.mark.parametrize(("images", "message"), [
    (torch.rand(2, 28, 28), r"shape \(N, 1, 28, 28\)"),
    (torch.rand(2, 3, 28, 28), r"shape \(N, 1, 28, 28\)"),
    (np.zeros((1, 1, 28, 28)), "got ndarray"),
    (torch.rand(0, 1, 28, 28), "empty"),
    (torch.full((1, 1, 28, 28), 2.0), r"in \[0, 1\]"),
    (torch.full((1, 1, 28, 28), float("nan")), "finite"),
])
def test_predict_rejects_bad_images(tmp_path, images, message):
    write(tmp_path / "ckpt", {"name": "mlp"})
    with pytest.raises(ValueError, match=message):
        Classifier.load(tmp_path / "ckpt").predict(images)


def test_refuses_other_kind(tmp_path):
    write(tmp_path / "ckpt", {"name": "mlp"}, kind="latent_ode")
    with pytest.raises(CheckpointError, match="holds a 'latent_ode' model"):
        Classifier.load(tmp_path / "ckpt")


def test_refuses_tampered_weights(tmp_path):
    write(tmp_path / "ckpt", {"name": "mlp"})
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match"):
        Classifier.load(tmp_path / "ckpt")


def test_refuses_weights_of_another_architecture(tmp_path):
    resnet_weights = build_classifier({"name": "resnet"}).state_dict()
    write(tmp_path / "ckpt", {"name": "odenet"}, state=resnet_weights)
    with pytest.raises(CheckpointError, match="do not match the config's architecture"):
        Classifier.load(tmp_path / "ckpt")


def test_refuses_weights_of_another_type(tmp_path):
    """float16 weights of the right shapes used to load as ready, silently cast."""
    half = {key: tensor.half() for key, tensor in build_classifier({"name": "mlp"}).state_dict().items()}
    write(tmp_path / "ckpt", {"name": "mlp"}, state=half)
    with pytest.raises(CheckpointError, match="ckpt: tensor 'layers.1.bias' holds float16, the model needs "
                                              "float32"):
        Classifier.load(tmp_path / "ckpt")


@pytest.mark.parametrize(("architecture", "message"), [
    (None, "no 'architecture' object"),
    ({"name": "vgg"}, "bad 'architecture'"),
    ({"name": "mlp", "hidden": 300, "tol": 1e-3}, "bad 'architecture'"),
    ({"name": "odenet", "tol": float("nan")}, "tol must be a finite number above 0, got nan"),
    ({"name": "odenet", "max_num_steps": 10**12}, "max_num_steps must be from 1 to 2147483647"),
    ({"name": "odenet", "segments": 10**6}, "segments must be from 1 to 100, got 1000000"),
    ({"name": "odenet", "segments": 101}, "segments must be from 1 to 100, got 101"),
    ({"name": "rknet", "steps": 101}, "steps must be from 1 to 100"),
    ({"name": "resnet", "blocks": 10**6}, "blocks must be from 1 to 1000"),
    ({"name": "mlp", "hidden": 10**9}, "hidden must be from 1 to 100000"),
    ({"name": "mlp", "hidden": 300.5}, "hidden must be a whole number"),
])
def test_refuses_bad_architecture(tmp_path, architecture, message):
    write(tmp_path / "ckpt", {"name": "mlp"})
    path = tmp_path / "ckpt" / "config.json"
    config = json.loads(path.read_text())
    config["architecture"] = architecture
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        Classifier.load(tmp_path / "ckpt")


@pytest.mark.parametrize("metrics", [[1, 2], "ab"])
def test_refuses_metrics_that_are_not_an_object(tmp_path, metrics):
    """This was a bare TypeError or ValueError ("dictionary update sequence ...") without a path."""
    write(tmp_path / "ckpt", {"name": "mlp"}, metrics=metrics)
    where = re.escape(str(tmp_path / "ckpt"))
    with pytest.raises(CheckpointError, match=f"{where}: .*metrics must be a JSON object, got "):
        Classifier.load(tmp_path / "ckpt")


def test_refuses_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        Classifier.load(tmp_path / "absent")


def test_concurrent_calls_count_their_own_nfe(tmp_path):
    write(tmp_path / "ckpt", {"name": "odenet"})
    classifier = Classifier.load(tmp_path / "ckpt")
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    alone = classifier.predict(images)[1]
    with ThreadPoolExecutor(4) as pool:
        counts = [result[1] for result in pool.map(classifier.predict, [images] * 4)]
    assert counts == [alone] * 4
