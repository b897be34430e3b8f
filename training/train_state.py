"""The training state that ``--resume`` continues from, stored without pickle.

It is a checkpoint directory (:mod:`service.model.checkpoint`, kind ``latent_ode_train_state``):
the model's and the optimiser's tensors in safetensors, everything else (epoch, step, best
metrics, the training config, the optimiser's hyper-parameters) in JSON, and the weights'
SHA-256. ``torch.save`` would pickle the optimiser state; here every tensor is named
``model.<name>``, ``optimizer.<param index>.<state key>`` or, when the run keeps a moving
average of the weights, ``average.<name>``.

A run resumes only with the config it was started with; ``epochs`` alone may change, so that a
finished run can be continued for longer.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from service.model.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_checkpoint

KIND = "latent_ode_train_state"
RESUMABLE_CHANGES = {"epochs"}


def save_train_state(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     config: Any, epoch: int, step: int, best: dict[str, Any],
                     averaged: AveragedModel | None = None) -> None:
    optimizer_state = optimizer.state_dict()
    tensors = {f"model.{name}": t for name, t in model.state_dict().items()}
    if averaged is not None:
        tensors.update({f"average.{name}": t for name, t in averaged.state_dict().items()})
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    save_checkpoint(directory, KIND, tensors, {
        "epoch": epoch, "step": step, "best": best, "training": asdict(config),
        "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars},
    })


def load_train_state(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     config: Any, averaged: AveragedModel | None = None) -> tuple[int, int, dict[str, Any]]:
    """Restore ``model``, ``optimizer`` and ``averaged``; return (next epoch, step, best metrics so far)."""
    saved, tensors = load_checkpoint(directory, kind=KIND)
    try:
        # A setting added after the run was saved reads as the value the run trained with.
        trained = {**getattr(config, "ADDED_SETTINGS", {}), **saved["training"]}
        changed = sorted(key for key, value in asdict(config).items()
                         if key not in RESUMABLE_CHANGES and trained.get(key) != value)
        if changed:
            raise CheckpointError(f"{directory}: cannot resume with a different config; changed: "
                                  + ", ".join(f"{k} ({trained.get(k)!r} -> {getattr(config, k)!r})"
                                              for k in changed))
        for module, prefix in ((model, "model."), (averaged, "average.")):
            if module is not None:
                saved_state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                load_state_strict(module, saved_state, str(directory))
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = value
        for index, values in saved["optimizer"]["scalars"].items():
            state.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": saved["optimizer"]["param_groups"]})
        return int(saved["epoch"]), int(saved["step"]), dict(saved["best"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}: malformed training state ({type(exc).__name__}: {exc})") from exc
