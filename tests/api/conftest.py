"""Fixtures for the server tests: real (tiny, untrained) checkpoints written with the real model
code, a models directory that also holds broken checkpoints, and clients on fresh apps."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.settings import Settings
from service.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_checkpoint
from service.model.classifier import KIND as CLASSIFIER_KIND
from service.model.forecaster import KIND as FORECASTER_KIND
from service.model.latent_ode import LatentODE, LatentODEConfig
from service.model.mnist_nets import build_classifier, complete_architecture
from service.model.series import Normalization
from service.model.solver import SolverConfig


def save_tiny_forecaster(directory: Path, channels: tuple[str, ...] = ("x", "y"),
                         time_unit: str | None = None, time_scale: float = 1.0, max_span: float = 10.0,
                         max_backcast: float = 5.0, solver: SolverConfig | None = None,
                         seed: int = 0, unseen_channels: bool = False) -> Path:
    """A randomly initialised latent ODE small enough to answer in milliseconds."""
    torch.manual_seed(seed)
    config = LatentODEConfig(num_channels=len(channels), latent_dim=3, encoder_hidden=6, dynamics_hidden=8,
                             decoder_hidden=6, solver=solver or SolverConfig())
    model = LatentODE(config)
    normalization = Normalization(time_scale, tuple(0.5 * i for i in range(len(channels))),
                                  tuple(1.0 + i for i in range(len(channels))))
    save_checkpoint(directory, FORECASTER_KIND, model.state_dict(), {
        "model": config.to_dict(), "normalization": normalization.to_dict(), "channels": list(channels),
        "time_unit": time_unit, "max_span": max_span, "max_backcast": max_backcast,
        "unseen_channels": unseen_channels, "metrics": {"val_rmse": 0.5},
    })
    return directory


def save_tiny_classifier(directory: Path, architecture: dict, seed: int = 0) -> Path:
    """An untrained MNIST classifier: its answers are arbitrary but real and deterministic."""
    torch.manual_seed(seed)
    model = build_classifier(architecture)
    save_checkpoint(directory, CLASSIFIER_KIND, model.state_dict(),
                    {"architecture": complete_architecture(architecture), "metrics": {"test_error": 0.9}})
    return directory


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> Path:
    """Checkpoints built once per session; tests copy the ones they need."""
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny_forecaster(root / "tiny")
    save_tiny_forecaster(root / "hourly", channels=("load",), time_unit="hours", time_scale=24.0,
                         max_span=72.0, max_backcast=36.0, seed=1)
    save_tiny_forecaster(root / "stiff", solver=SolverConfig(rtol=1e-9, atol=1e-9, max_num_steps=2), seed=2)
    save_tiny_forecaster(root / "tampered", seed=3)
    weights = root / "tampered" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    save_tiny_forecaster(root / "foreign", seed=4)
    config = json.loads((root / "foreign" / CONFIG_FILE).read_text())
    (root / "foreign" / CONFIG_FILE).write_text(json.dumps({**config, "kind": "gpt"}))
    save_tiny_classifier(root / "digits", {"name": "mlp", "hidden": 16})
    save_tiny_classifier(root / "digits-ode", {"name": "odenet", "tol": 0.1, "max_num_steps": 50}, seed=1)
    save_tiny_classifier(root / "digits-stiff", {"name": "odenet", "tol": 1e-9, "max_num_steps": 2}, seed=2)
    (root / "garbled").mkdir()
    (root / "garbled" / CONFIG_FILE).write_text("{not json")
    return root


@pytest.fixture
def models_dir(tmp_path, checkpoints) -> Path:
    """Good forecasters (tiny, hourly), one that hits its step cap (stiff), two classifiers
    (digits, digits-ode), one that hits its step cap (digits-stiff) and three broken checkpoints
    (tampered, foreign, garbled)."""
    directory = tmp_path / "models"
    shutil.copytree(checkpoints, directory)
    return directory


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(models_dir) -> Iterator[ClientFactory]:
    """``make_client(**settings)``: a client on a fresh app whose lifespan has run."""
    clients: list[TestClient] = []

    def make(**overrides) -> TestClient:
        settings = Settings(**{"models_dir": models_dir, "default_model": "tiny",
                               "default_classifier": "digits", "torch_threads": 1,
                               **overrides})
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()
