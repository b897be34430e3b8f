"""Checkpoints as directories: weights in safetensors, everything else in a JSON config.

A checkpoint directory holds exactly two files:

- ``model.safetensors``: the tensors of the model's ``state_dict``. safetensors stores raw
  tensors only, so loading a checkpoint never unpickles anything (``torch.load`` would).
- ``config.json``: what is needed to rebuild and use the model (architecture, channel names,
  normalisation, solver settings, metrics, data fingerprint, code version) plus the SHA-256 of
  the weights file.

Loading verifies the hash before reading a tensor and checks the config's format, so a
tampered, truncated or foreign file is refused with a :class:`CheckpointError` that says which
file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from service import __version__

FORMAT = "odecast-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# The trainers keep their resume state in "<checkpoint>.train_state" beside the checkpoint.
TRAIN_STATE_SUFFIX = ".train_state"


def train_state_path(out: str | Path) -> Path:
    """Where a trainer keeps ``--resume`` state: beside the checkpoint, so ``out`` itself is
    servable."""
    out = Path(out)
    return out.with_name(out.name + TRAIN_STATE_SUFFIX)


class CheckpointError(ValueError):
    """A checkpoint directory is missing, malformed, or does not match its recorded hash."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def foreign_entries(directory: Path) -> list[str]:
    """What a save would not carry over into the directory that replaces ``directory``: all
    but its plain files (the weights, the config, plots)."""
    return [entry.name for entry in directory.iterdir() if not entry.is_file() or entry.is_symlink()]


def save_checkpoint(directory: str | Path, kind: str, state_dict: dict[str, torch.Tensor],
                    config: dict[str, Any]) -> str:
    """Write a checkpoint atomically and return the weights' SHA-256.

    The files are written to a temporary sibling directory that then replaces ``directory``,
    so a crash mid-write never leaves a half-written checkpoint where a server would load it.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tensors = {name: t.detach().cpu().contiguous() for name, t in state_dict.items()}
        save_file(tensors, str(staging / WEIGHTS_FILE))
        weights_sha256 = sha256_file(staging / WEIGHTS_FILE)
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                "code_version": __version__, "weights_sha256": weights_sha256, **config}
        (staging / CONFIG_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        # Keep any extra files (plots) that an earlier save put next to the checkpoint; anything
        # else there (a directory: '--out runs' for '--out runs/my-model') is not ours to replace.
        if directory.exists():
            foreign = foreign_entries(directory)
            if foreign:
                raise CheckpointError(f"{directory}: holds {foreign[0]!r}, which is no part of a checkpoint; "
                                      "a checkpoint replaces its directory: move it out, or write the "
                                      "checkpoint to a new directory")
            for extra in directory.iterdir():
                if extra.name not in (WEIGHTS_FILE, CONFIG_FILE) and extra.is_file():
                    shutil.copy2(extra, staging / extra.name)
            backup = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(directory, backup)
            os.replace(staging, directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, directory)
        # mkdtemp made the directory owner-only; a server running as another user must read it.
        os.chmod(directory, 0o755)
        for written in directory.iterdir():
            os.chmod(written, 0o644)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return weights_sha256


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and validate ``config.json`` without touching the weights."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:  # also an integer of more than 4300 digits, not only a syntax error
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{path}: nested too deeply to read ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: 'format' is {config.get('format')!r}, expected {FORMAT!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported format_version {config.get('format_version')!r}")
    for key in ("kind", "weights_sha256"):
        if not isinstance(config.get(key), str):
            raise CheckpointError(f"{path}: '{key}' missing or not a string")
    return config


def load_checkpoint(directory: str | Path, kind: str | None = None
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return ``(config, state_dict)`` after checking the format, the kind and the weights' hash."""
    directory = Path(directory)
    config = read_config(directory)
    if kind is not None and config["kind"] != kind:
        raise CheckpointError(f"{directory}: holds a {config['kind']!r} model, expected {kind!r}")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    actual = sha256_file(weights)
    if actual != config["weights_sha256"]:
        raise CheckpointError(f"{weights}: SHA-256 {actual[:12]}… does not match the config's "
                              f"{config['weights_sha256'][:12]}…; the file was changed or corrupted")
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc})") from exc
    return config, state_dict


def json_object(value: object, what: str) -> dict[str, Any]:
    """``value``, a config's JSON object, as a dict, or a ValueError naming ``what`` it should be
    (``dict([1, 2])`` fails with a message that names neither)."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {value!r:.80}")
    return dict(value)


def build_and_load(build: Callable[[], torch.nn.Module], state_dict: dict[str, torch.Tensor],
                   where: str) -> torch.nn.Module:
    """``build()`` (the network a config describes) with ``state_dict`` loaded strictly into it.

    The network is first built on torch's meta device, which allocates nothing, and compared
    with the weights: a config that describes a far larger network than its weights (a latent
    size of 3e6 took 3 GB and 20 s to build before its shapes were compared) is refused before
    anything is allocated.
    """
    with torch.device("meta"):
        check_state(build(), state_dict, where)
    module = build()
    module.load_state_dict(state_dict)
    return module


def load_state_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Load weights into a freshly built module; see :func:`check_state` for what is refused."""
    check_state(module, state_dict, where)
    module.load_state_dict(state_dict)


def check_state(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights with a missing, extra, misshapen or differently typed tensor.

    The type as well as the shape: ``load_state_dict`` casts silently, so float16, int64 or bool
    weights of the right shape loaded and then gave nonsense forecasts, blamed on the client
    as "the dynamics are too stiff"; as did NaN or infinite weights.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not match the config's architecture "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for name, tensor in state_dict.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{where}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"the architecture needs {tuple(expected[name].shape)}")
        if tensor.dtype != expected[name].dtype:
            raise CheckpointError(f"{where}: tensor {name!r} holds {dtype_name(tensor.dtype)}, "
                                  f"the model needs {dtype_name(expected[name].dtype)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{where}: tensor {name!r} holds NaN or infinite values; no trained "
                                  "model does")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
