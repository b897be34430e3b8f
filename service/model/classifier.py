"""A trained MNIST classifier loaded from its checkpoint, as the server uses it.

The checkpoint's ``config["architecture"]`` rebuilds the network (:mod:`service.model.mnist_nets`),
the weights are loaded strictly, and :meth:`Classifier.predict` returns class probabilities
together with the number of ODE function evaluations the call cost (0 for resnet and mlp).
Calls are serialised by a lock, because the NFE counter lives on the shared model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.model.checkpoint import CheckpointError, build_and_load, json_object, load_checkpoint
from service.model.mnist_nets import build_classifier

KIND = "mnist_classifier"
MAX_BATCH = 1000  # images per solve; larger requests are split so memory stays bounded


class Classifier:
    def __init__(self, name: str, config: dict[str, Any], model: torch.nn.Module):
        self.name = name
        self.config = config
        self.version = config["weights_sha256"][:12]
        self.architecture = config["architecture"]["name"]
        self.metrics = json_object(config.get("metrics", {}), f"{name}: metrics")
        self.model = model.eval()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> Classifier:
        """Load and verify a checkpoint; any fault is a :class:`CheckpointError`."""
        directory = Path(directory)
        config, state = load_checkpoint(directory, kind=KIND)
        architecture = config.get("architecture")
        if not isinstance(architecture, dict):
            raise CheckpointError(f"{directory}: config has no 'architecture' object")
        try:
            model = build_and_load(lambda: build_classifier(architecture), state, str(directory))
        except CheckpointError:
            raise
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise CheckpointError(f"{directory}: bad 'architecture' in config ({exc})") from exc
        try:
            return cls(name or directory.name, config, model)
        except ValueError as exc:
            raise CheckpointError(f"{directory}: config.json does not describe a usable classifier "
                                  f"({exc})") from exc

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[np.ndarray, int]:
        """Probabilities (N, 10) for float images (N, 1, 28, 28) in [0, 1], and the forward NFE."""
        if not isinstance(images, torch.Tensor) or tuple(images.shape[1:]) != (1, 28, 28):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor of shape (N, 1, 28, 28), got {shape}")
        if len(images) == 0:
            raise ValueError("images is empty")
        images = images.float()
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ValueError("image values must be finite and in [0, 1]")
        probabilities, nfe = [], 0
        with self._lock:
            for chunk in images.split(MAX_BATCH):
                self.model.reset_nfe()
                probabilities.append(torch.softmax(self.model(chunk), dim=1))
                nfe += self.model.nfe
        return torch.cat(probabilities).numpy().astype(np.float64), nfe
