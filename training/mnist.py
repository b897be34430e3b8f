"""Train an MNIST classifier of Chen et al. 2018, Table 1 (odenet, rknet, resnet or mlp).

Reads the IDX files from ``--data-dir``, trains with SGD on random 28×28 crops of the
zero-padded digits, evaluates on the full test set after every epoch and keeps the best model
as a checkpoint in ``--out`` (kind ``mnist_classifier``). Beside it, ``<out>.train_state/``
holds the latest weights, optimiser state and history (safetensors + JSON, never pickle), so
``--resume`` continues an interrupted run from its last finished epoch.

Presets: ``paper`` is the torchdiffeq example's recipe (SGD momentum 0.9, lr 0.1, ×0.1 at epochs
60/100/140, 160 epochs, no weight decay); ``short`` is a one-cycle schedule that reaches ≥99.3%
in a few epochs on a CPU. Flags override preset values.

Runs as one process or under ``torchrun --nproc-per-node N``: the batch is split across ranks,
each rank sees its own shard of every epoch's permutation, and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from service.model.bounds import whole_number
from service.model.checkpoint import load_checkpoint, load_state_strict, save_checkpoint, train_state_path
from service.model.classifier import KIND
from service.model.mnist_nets import ARCHITECTURES, build_classifier, complete_architecture, parameter_count
from service.model.odenet import GRADIENT_MODES
from training import distributed
from training.command_checks import check_out, check_threads
from training.data.mnist_idx import fingerprint, load_split, random_crop, to_tensor

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 160, "lr": 0.1, "schedule": "step", "nesterov": False, "weight_decay": 0.0},
    "short": {"epochs": 6, "lr": 0.1, "schedule": "onecycle", "nesterov": True, "weight_decay": 5e-4},
}
MILESTONES = (60, 100, 140)  # the paper preset's lr decay epochs
WARMUP_FRACTION = 0.15  # the one-cycle schedule's linear warm-up, as a share of all steps


@dataclass
class TrainConfig:
    model: str = "odenet"
    data_dir: str = "../shared/data/mnist"
    out: str = "models/mnist-odenet"
    preset: str = "short"
    epochs: int = 6
    batch_size: int = 128
    test_batch_size: int = 1000
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # "step" (×0.1 at MILESTONES) or "onecycle" (warm-up, cosine)
    crop_padding: int = 4
    tol: float = 1e-3  # odenet: dopri5 rtol = atol
    gradient: str = "direct"  # odenet: direct | adjoint | checkpointed
    segments: int = 1  # odenet: consecutive solves over [0, 1] (checkpoint boundaries)
    rk_steps: int = 4  # rknet: rk4 steps over [0, 1]
    limit_train_batches: int | None = None
    limit_test_batches: int | None = None
    seed: int = 0
    threads: int | None = None
    device: str | None = None
    resume: bool = False
    init_from: str | None = None  # start from this checkpoint's weights (same parameters)

    def __post_init__(self) -> None:
        """Every setting checked before any data is read, as the latent-ODE trainer does: a bad
        flag is refused at once with its name, and none trains silently wrong (a negative batch
        size once trained nothing and saved the untrained weights)."""
        for name in ("epochs", "batch_size", "test_batch_size", "limit_train_batches", "limit_test_batches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        check_threads(self.threads)
        # torch's CPU generator keeps a seed's low 32 bits: a larger seed would repeat a smaller one
        whole_number("seed", self.seed, 0, 2**32 - 1)
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be 0 or more, got {self.crop_padding}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (0 <= self.momentum < 1 and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"need 0 <= momentum < 1 and weight_decay >= 0, got {self.momentum} and "
                             f"{self.weight_decay}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0: pass --no-nesterov or a --momentum")
        if self.schedule not in ("step", "onecycle"):
            raise ValueError(f"schedule must be 'step' or 'onecycle', got {self.schedule!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        self.architecture()  # the model's own settings (tol, segments, rk_steps), by service.model.bounds

    def architecture(self) -> dict[str, Any]:
        by_model = {"odenet": {"tol": self.tol, "gradient": self.gradient, "segments": self.segments},
                    "rknet": {"steps": self.rk_steps}, "resnet": {}, "mlp": {}}
        return complete_architecture({"name": self.model, **by_model[self.model]})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=ARCHITECTURES, default=TrainConfig.model)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=TrainConfig.preset)
    parser.add_argument("--data-dir", default=TrainConfig.data_dir, help="directory with the IDX files")
    parser.add_argument("--out", default=TrainConfig.out, help="checkpoint directory (best model)")
    for name in ("epochs", "batch_size", "test_batch_size", "crop_padding", "segments", "rk_steps",
                 "limit_train_batches", "limit_test_batches", "seed", "threads"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    for name in ("lr", "momentum", "weight_decay", "tol"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None)
    parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--schedule", choices=("step", "onecycle"), default=None)
    parser.add_argument("--gradient", choices=GRADIENT_MODES, default=None)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.train_state/")
    parser.add_argument("--init-from", help="start from the weights of this checkpoint, whose architecture "
                        "has the same parameters (e.g. an rknet to fine-tune as an odenet)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Dataclass defaults, then the preset, then every flag given on the command line."""
    config = replace(TrainConfig(), **PRESETS[args.preset])
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    return replace(config, **given)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    if config.schedule == "step":
        epoch = step // steps_per_epoch
        return config.lr * 0.1 ** sum(epoch >= m for m in MILESTONES)
    total = config.epochs * steps_per_epoch
    warmup = max(1, round(WARMUP_FRACTION * total))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def save_train_state(config: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     progress: dict[str, Any]) -> None:
    """Latest weights + optimiser tensors in safetensors, the rest in JSON; replaced atomically."""
    target = train_state_path(config.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    optim = optimizer.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optim["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    save_file(tensors, str(staging / "state.safetensors"))
    meta = {"progress": progress, "config": asdict(config), "param_groups": optim["param_groups"],
            "optimizer_scalars": scalars}
    (staging / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def load_train_state(config: TrainConfig, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    source = train_state_path(config.out)
    if not (source / "state.json").is_file():
        raise FileNotFoundError(f"--resume: no training state at {source}")
    meta = json.loads((source / "state.json").read_text())
    saved = TrainConfig(**meta["config"]).architecture()
    if saved != config.architecture():
        raise ValueError(f"--resume: {source} trained {saved}, but this run asks for {config.architecture()}")
    tensors = load_file(str(source / "state.safetensors"))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entry in meta["optimizer_scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["progress"]


def shard(count: int, epoch: int, config: TrainConfig, ctx: distributed.Context) -> torch.Tensor:
    """This rank's share of the epoch's permutation (the same permutation on every rank)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    per_rank = count // ctx.world_size
    return order[ctx.rank::ctx.world_size][:per_rank]


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
             ctx: distributed.Context) -> tuple[float, float]:
    """(accuracy over all ranks' shards, mean forward NFE per batch) on the given images."""
    raw = distributed.unwrap(model)
    model.eval()
    indices = torch.arange(ctx.rank, len(images), ctx.world_size)
    batches = indices.split(config.test_batch_size)[:config.limit_test_batches]
    correct, seen, nfe = 0, 0, 0
    for batch in batches:
        raw.reset_nfe()
        logits = raw(images[batch].to(ctx.device))
        nfe += raw.nfe
        correct += (logits.argmax(1).cpu() == labels[batch]).sum().item()
        seen += len(batch)
    total_correct = distributed.all_reduce_mean(correct, ctx) * ctx.world_size
    total_seen = distributed.all_reduce_mean(seen, ctx) * ctx.world_size
    return total_correct / total_seen, nfe / max(1, len(batches))


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    check_out(config.out, config.resume)
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = distributed.setup(config.device)
    torch.manual_seed(config.seed)

    train, test = load_split(config.data_dir, "train"), load_split(config.data_dir, "test")
    data_files = [*train.files, *test.files]
    train_x, train_y = to_tensor(train.images), torch.from_numpy(train.labels)
    test_x, test_y = to_tensor(test.images), torch.from_numpy(test.labels)

    raw = build_classifier(config.architecture()).to(ctx.device)
    optimizer = torch.optim.SGD(raw.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    progress: dict[str, Any] = {"epoch": 0, "best_accuracy": -1.0, "wall_time_s": 0.0, "history": []}
    if config.resume:
        progress = load_train_state(config, raw, optimizer)
        if progress["epoch"] >= config.epochs:  # it would exit 0 having done nothing
            done = progress["epoch"]
            raise ValueError(f"--resume: the run in {config.out} has already trained {done} epochs; --epochs "
                             f"counts all of a run's epochs (here {config.epochs}): pass more than {done} to "
                             "train on")
    elif config.init_from:
        source_config, state = load_checkpoint(config.init_from, kind=KIND)
        load_state_strict(raw, state, config.init_from)
        progress["initialized_from"] = {key: source_config[key] for key in
                                        ("architecture", "weights_sha256", "metrics", "epochs", "training")}
    model = distributed.wrap(raw, ctx)

    rank_batch = config.batch_size // ctx.world_size
    if rank_batch < 1:
        raise ValueError(f"batch_size {config.batch_size} is below the {ctx.world_size} processes: each "
                         "needs at least one image per step")
    steps_per_epoch = (len(train_x) // ctx.world_size) // rank_batch
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(train_x)} training images "
                         f"in {config.data_dir}" + (f" shared by {ctx.world_size} processes"
                                                    if ctx.world_size > 1 else ""))
    if config.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, config.limit_train_batches)
    if ctx.is_main:
        print(f"{config.model}: {parameter_count(raw):,} parameters, {steps_per_epoch} steps/epoch, "
              f"{ctx.world_size} process(es) on {ctx.device}, config {asdict(config)}", flush=True)

    for epoch in range(progress["epoch"], config.epochs):
        started = time.time()
        model.train()
        order = shard(len(train_x), epoch, config, ctx)
        crops = torch.Generator().manual_seed(config.seed * 100_003 + epoch * 1_000 + ctx.rank)
        sums = {"loss": 0.0, "nfe_forward": 0.0, "nfe_backward": 0.0}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not ctx.is_main, mininterval=5.0)
        for step in bar:
            batch = order[step * rank_batch:(step + 1) * rank_batch]
            x = random_crop(train_x[batch], config.crop_padding, crops).to(ctx.device)
            y = train_y[batch].to(ctx.device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch * steps_per_epoch + step, steps_per_epoch)
            raw.reset_nfe()
            loss = F.cross_entropy(model(x), y)
            nfe_forward = raw.nfe
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nfe_backward = raw.nfe - nfe_forward
            optimizer.step()
            sums["loss"] += loss.item()
            sums["nfe_forward"] += nfe_forward
            sums["nfe_backward"] += nfe_backward
            bar.set_postfix(loss=f"{loss.item():.4f}", nfe_f=nfe_forward, nfe_b=nfe_backward,
                            lr=f"{group['lr']:.4f}", refresh=False)
        bar.close()
        means = {k: distributed.all_reduce_mean(v / steps_per_epoch, ctx) for k, v in sums.items()}
        accuracy, test_nfe = evaluate(model, test_x, test_y, config, ctx)
        progress["wall_time_s"] += time.time() - started
        progress["epoch"] = epoch + 1
        record = {"epoch": epoch + 1, "train_loss": means["loss"], "test_accuracy": accuracy,
                  "nfe_forward": means["nfe_forward"], "nfe_backward": means["nfe_backward"],
                  "test_nfe": test_nfe, "seconds": time.time() - started}
        progress["history"].append(record)
        if ctx.is_main:
            print(json.dumps(record), flush=True)
            if accuracy > progress["best_accuracy"]:
                progress["best_accuracy"] = accuracy
                save_best(config, raw, record, progress, data_files)
            save_train_state(config, raw, optimizer, progress)
        distributed.barrier(ctx)
    distributed.teardown(ctx)


def save_best(config: TrainConfig, model: torch.nn.Module, record: dict[str, Any],
              progress: dict[str, Any], data_files: list[Path]) -> None:
    metrics = {**record, "test_error": 1.0 - record["test_accuracy"]}
    save_checkpoint(config.out, KIND, model.state_dict(), {
        "architecture": config.architecture(),
        "metrics": metrics,
        "parameter_count": parameter_count(model),
        "data": fingerprint(data_files),
        "epochs": progress["epoch"],
        "preset": config.preset,
        "training": {k: v for k, v in asdict(config).items() if k not in ("resume", "device", "out")},
        "wall_time_s": progress["wall_time_s"],
        "history": progress["history"],
        "initialized_from": progress.get("initialized_from"),
    })
