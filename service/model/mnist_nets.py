"""The four MNIST classifiers of Chen et al. 2018, Table 1, built from one architecture dict.

``odenet``, ``rknet`` and ``resnet`` share torchdiffeq's ``examples/odenet_mnist.py`` layout:
convolutional downsampling 28→26→13→6 with 64 channels, a feature block, then
GroupNorm → ReLU → global average pool → Linear(64, 10). Only the feature block differs:
an adaptive ODE solve (ODE-Net), a fixed-step RK integration of the same field (RK-Net), or six
residual blocks (ResNet). ``mlp`` is the 1-hidden-layer baseline (784→300→10, 0.24M parameters).

The architecture dict is what checkpoints record under ``config["architecture"]``, so a model is
rebuilt from its checkpoint with :func:`build_classifier` alone. Inputs are images in [0, 1],
shape (N, 1, 28, 28), not normalised (as in the torchdiffeq example).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from service.model.bounds import (
    MAX_DEPTH,
    MAX_INT32,
    MAX_SOLVES_PER_PASS,
    MAX_WIDTH,
    positive_number,
    whole_number,
)
from service.model.odenet import GRADIENT_MODES, ODEBlock, RKBlock, group_norm
from service.model.solver import SolverConfig

ARCHITECTURES = ("odenet", "rknet", "resnet", "mlp")
WIDTH = 64
DEFAULTS: dict[str, dict[str, Any]] = {
    "odenet": {"method": "dopri5", "tol": 1e-3, "gradient": "direct", "segments": 1,
               "max_num_steps": 1000},
    "rknet": {"method": "rk4", "steps": 4},
    "resnet": {"blocks": 6},
    "mlp": {"hidden": 300},
}
# The most each whole-number setting may be (why: :mod:`service.model.bounds`). Segments and RK
# steps are solves per forward pass, residual blocks are modules; trained models use at most 6.
WHOLE_NUMBER_LIMITS = {"segments": MAX_SOLVES_PER_PASS, "steps": MAX_SOLVES_PER_PASS, "blocks": MAX_DEPTH,
                       "hidden": MAX_WIDTH, "max_num_steps": MAX_INT32}


def complete_architecture(arch: dict[str, Any]) -> dict[str, Any]:
    """Fill in defaults and reject unknown names or keys, so a checkpoint records every setting, and
    reject values out of range (NaN tolerances, 10**6 blocks) before anything is built."""
    name = arch.get("name")
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture 'name' is {name!r}; known: {', '.join(ARCHITECTURES)}")
    unknown = set(arch) - set(DEFAULTS[name]) - {"name"}
    if unknown:
        raise ValueError(f"unknown settings for {name}: {sorted(unknown)}")
    full = {"name": name, **DEFAULTS[name], **arch}
    if name == "odenet" and full["gradient"] not in GRADIENT_MODES:
        raise ValueError(f"unknown gradient mode {full['gradient']!r}; known: {', '.join(GRADIENT_MODES)}")
    for key, high in WHOLE_NUMBER_LIMITS.items():
        if key in full:
            whole_number(key, full[key], 1, high)
    if "tol" in full:
        positive_number("tol", full["tol"])
    return full


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(relu(norm(conv(relu(norm(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.norm1(x)))
        return x + self.conv2(torch.relu(self.norm2(out)))


def downsampling(channels: int = WIDTH) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, 1), group_norm(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1), group_norm(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
    )


def head(channels: int = WIDTH, classes: int = 10) -> nn.Sequential:
    return nn.Sequential(group_norm(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(channels, classes))


class MNISTClassifier(nn.Module):
    """downsampling → feature block → head, with the feature block's NFE count exposed."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.downsampling = downsampling()
        self.features = features
        self.head = head()

    @property
    def nfe(self) -> int:
        """Function evaluations since the last reset (0 for a ResNet)."""
        return getattr(self.features, "nfe", 0)

    def reset_nfe(self) -> None:
        if hasattr(self.features, "nfe"):
            self.features.nfe = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.downsampling(x)))


class MLP(nn.Module):
    """The 1-hidden-layer baseline (LeCun et al. 1998): 784 → hidden → 10."""

    nfe = 0

    def __init__(self, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, 10))

    def reset_nfe(self) -> None:
        """Nothing to reset: there is no ODE."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_classifier(arch: dict[str, Any]) -> MNISTClassifier | MLP:
    """Build an untrained classifier from an architecture dict (see :data:`DEFAULTS`)."""
    arch = complete_architecture(arch)
    name = arch["name"]
    if name == "odenet":
        solver = SolverConfig(method=arch["method"], rtol=arch["tol"], atol=arch["tol"],
                              max_num_steps=arch["max_num_steps"])
        return MNISTClassifier(ODEBlock(WIDTH, solver, arch["gradient"], arch["segments"]))
    if name == "rknet":
        return MNISTClassifier(RKBlock(WIDTH, arch["method"], arch["steps"]))
    if name == "resnet":
        return MNISTClassifier(nn.Sequential(*(ResBlock(WIDTH) for _ in range(arch["blocks"]))))
    return MLP(arch["hidden"])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
