"""Every checkpoint under the models directory, loaded once, with the reason for any failure.

Each subdirectory holding a ``config.json`` or a ``model.safetensors`` is a checkpoint, named
after the directory and loaded by the class its ``kind`` names (one with weights but no usable
config is listed as failed rather than skipped without a word). A checkpoint that cannot be
loaded (hash mismatch, malformed config, a kind this server does not know, or a bug in loading
it) is kept as an entry with its error, so ``GET /models`` shows why it is missing, and the others are served.
The trainers' resume state (``<checkpoint>.train_state``, beside each checkpoint) is not a
model and is skipped, so a trainer's output directory can be served as it is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.model import classifier, forecaster
from service.model.checkpoint import (
    CONFIG_FILE,
    TRAIN_STATE_SUFFIX,
    WEIGHTS_FILE,
    CheckpointError,
    read_config,
)

log = logging.getLogger("odecast.registry")

LOADERS: dict[str, Callable[[Path, str], Any]] = {
    forecaster.KIND: forecaster.Forecaster.load,
    classifier.KIND: classifier.Classifier.load,
}


@dataclass
class ModelEntry:
    """One checkpoint directory: the loaded model, or the error that kept it from loading.

    The models serialise their own calls (their NFE counters live on the torch modules), so
    concurrent requests to one model queue in the threadpool rather than split the cores.
    """

    name: str
    directory: Path
    kind: str | None
    model: Any | None = None
    error: str | None = None
    load_seconds: float = 0.0

    @property
    def ready(self) -> bool:
        return self.model is not None


def load_entry(directory: Path) -> ModelEntry:
    started = time.perf_counter()
    entry = ModelEntry(name=directory.name, directory=directory, kind=None)
    try:
        entry.kind = read_config(directory)["kind"]
        loader = LOADERS.get(entry.kind)
        if loader is None:
            raise CheckpointError(f"{directory}: kind {entry.kind!r} is not one this server serves "
                                  f"({', '.join(sorted(LOADERS))})")
        entry.model = loader(directory, directory.name)
    except CheckpointError as exc:
        entry.error = _without_server_paths(str(exc), directory)
        log.error("model %s not loaded: %s", directory.name, exc, extra={"model": directory.name})
    except Exception as exc:  # one broken checkpoint must not keep the others from being served
        entry.error = _without_server_paths(f"{type(exc).__name__}: {exc}", directory)
        log.exception("model %s not loaded", directory.name, extra={"model": directory.name})
    entry.load_seconds = time.perf_counter() - started
    if entry.ready:
        log.info("model %s loaded", entry.name, extra={"model": entry.name, "kind": entry.kind,
                                                       "version": entry.model.version,
                                                       "load_seconds": round(entry.load_seconds, 3)})
    return entry


def _without_server_paths(error: str, directory: Path) -> str:
    """A load error as clients see it (GET /models, a 503): paths relative to the models
    directory, which is the server's business; the log keeps them whole."""
    return error.replace(str(directory), directory.name)


class ModelRegistry:
    def __init__(self, entries: list[ModelEntry]):
        self._entries = {entry.name: entry for entry in entries}

    def default_problem(self, name: str, kind: str) -> str | None:
        """Why the default model ``name`` cannot serve requests of ``kind``, if it cannot."""
        entry = self.get(name)
        if entry is None:
            return f"no checkpoint is named {name!r} (found: {', '.join(sorted(self.names())) or 'none'})"
        if not entry.ready:
            return f"{name!r} failed to load: {entry.error}"
        if entry.kind != kind:
            return f"{name!r} is a {entry.kind} model, not a {kind} model"
        return None

    @classmethod
    def load(cls, models_dir: Path) -> ModelRegistry:
        """Load every checkpoint directory under ``models_dir`` (hidden and training-state
        directories skipped)."""
        directories = sorted(path for path in Path(models_dir).iterdir()
                             if path.is_dir() and not path.name.startswith(".")
                             and not path.name.endswith(TRAIN_STATE_SUFFIX)
                             and any(os.path.lexists(path / name) for name in (CONFIG_FILE, WEIGHTS_FILE)))
        return cls([load_entry(directory) for directory in directories])

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self._entries.values())

    def get(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return list(self._entries)

    def count(self, ready: bool) -> int:
        return sum(entry.ready == ready for entry in self)
