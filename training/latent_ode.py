"""Train the latent-ODE forecaster on spirals or a CSV file of irregular series.

Read top to bottom: validation, then :func:`train` (its settings, ``TrainConfig``, are in
:mod:`training.latent_ode_config`), which is also the entry point for code that has its series
in memory (the Table 2 benchmark). One process or DDP under
``torchrun --nproc-per-node N -m training latent-ode ...`` (gloo on CPU); only rank 0 writes.

Each epoch: minibatches of training series (each rank its shard) are collated onto their
union time grid and the negative ELBO/IWAE bound is minimised (KL annealed linearly over
``kl_warmup_epochs``; learning rate decayed per step as in latent_ode's run_models.py), each
series first cropped (``min_window_fraction`` < 1), thinned (``min_keep_fraction`` < 1) and
read only in part (``min_context_fraction`` < 1; the last part for a ``backcast_fraction`` of
them, which trains backcasts) as :mod:`training.augment` explains. Where the
series already start at every phase and the forecasts asked for are long (the spirals: read
100 steps, forecast 100), whole series (``min_window_fraction`` = 1) train that horizon
better: crops seldom leave it; ``max_context_fraction`` = ``min_context_fraction`` = 0.5 is
Rubanova et al.'s half, which the Table 2 benchmark uses. Then the validation series are split by
:mod:`training.holdout` and the current model predicts the held-out points (interpolation MSE)
and the tail (extrapolation MSE), both in normalised units. The epoch with the lowest
``val_mse`` (the mean of the two) is kept in ``OUT`` (a checkpoint directory the server can
load, marked ``finished: false`` until the run ends); with ``ema_decay`` > 0 the weights
validated and kept are an exponential moving average of the trained ones
(:func:`weight_average`); the last training state, for ``--resume``, in ``OUT.train_state``
beside it, as the MNIST trainer does. At the end the kept model is also measured on the test
split and, where the source provides a clean future (spirals), by its RMSE there; those metrics
go into the checkpoint's config, and a Figure-6 style plot next to it.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from service.model.batching import collate
from service.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, train_state_path
from service.model.forecaster import KIND, Forecaster
from service.model.latent_ode import LatentODE
from service.model.series import Normalization, Series
from training import distributed
from training.augment import draw, hide_channel, prefix, subsample, suffix, window
from training.command_checks import check_out, check_threads
from training.data.dataset import (
    check_channels_observed,
    check_series,
    check_spans,
    check_values_covered,
    describe_data,
    fingerprint,
    load_dataset,
)
from training.data.spirals import split_spirals
from training.data.splits import check_split, split_by_series
from training.evaluation import (
    Target,
    backcast_targets,
    evaluate,
    future_targets,
    holdout_targets,
)
from training.holdout import Holdout, check_validation_holds_out, holdout_split, recent
from training.latent_ode_config import OPTIMIZERS, TrainConfig
from training.plots import plot_forecasts
from training.train_state import load_train_state, save_train_state

PLOT_FILE = "forecasts.png"


# ----------------------------------------------------------------------------- validation
# (the measures themselves are in training/evaluation.py)

def validation_score(metrics: dict[str, Any]) -> float | None:
    """``val_mse``: the mean of the interpolation and extrapolation MSE that were measured."""
    measured = [metrics[k] for k in ("val_interp_mse", "val_extrap_mse") if k in metrics]
    return float(np.mean(measured)) if measured else None


def score(metrics: dict[str, Any]) -> float:
    """Lower is better; a run without any validation target keeps its first epoch."""
    return math.inf if metrics["val_mse"] is None else metrics["val_mse"]


def describe(metrics: dict[str, Any]) -> str:
    parts = [f"{label} {metrics[key]:.4f}" if key in metrics else f"{label} n/a"
             for label, key in (("val interp MSE", "val_interp_mse"), ("extrap MSE", "val_extrap_mse"))]
    return ", ".join(parts)


# ----------------------------------------------------------------------------- training

def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    return OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr)


def weight_average(config: TrainConfig, model: torch.nn.Module) -> AveragedModel | None:
    """With ``ema_decay`` > 0, a moving average of ``model``'s weights (Polyak averaging), updated
    after every optimiser step; validated and kept in place of the raw weights.

    Why: at the learning rates that train these models in a few thousand steps, the raw weights
    wander from step to step, so which epoch validates best, and how good it is on the test
    series, varied a lot between training seeds; the average smooths that walk.
    """
    if not config.ema_decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)


def train_epoch(config: TrainConfig, epoch: int, step: int, model: LatentODE, ddp_model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, normalized: list[Series], ctx: distributed.Context,
                averaged: AveragedModel | None = None) -> tuple[int, float]:
    """One pass over this rank's shard of the (normalised) training series; returns (step, mean loss).

    Every rank takes the same number of steps (DDP needs it): the shard is padded by wrapping.
    Shuffling, subsampling and z0 noise are seeded by (seed, epoch, rank), so a resumed run
    continues exactly as an uninterrupted one.
    """
    per_rank = max(1, len(normalized) // ctx.world_size)
    warmup_steps = config.kl_warmup_epochs * math.ceil(per_rank / config.batch_size)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(normalized))
    shard = np.resize(order[ctx.rank::ctx.world_size], per_rank)
    rank_rng = np.random.default_rng([config.seed, epoch, ctx.rank])
    torch.manual_seed(int(rank_rng.integers(2**62)))
    model.train()
    losses = []
    bar = tqdm(range(0, per_rank, config.batch_size), disable=not ctx.is_main,
               desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
    for first in bar:
        chosen = [normalized[i] for i in shard[first:first + config.batch_size]]
        if config.min_window_fraction < 1:
            chosen = [window(s, config.min_window_fraction, rank_rng) for s in chosen]
        if config.min_keep_fraction < 1:
            chosen = [subsample(s, config.min_keep_fraction, rank_rng) for s in chosen]
        context = None
        if config.min_context_fraction < 1 or config.hide_channel_fraction:
            parts = chosen
            if config.min_context_fraction < 1:
                backcast = draw(rank_rng, len(parts), config.backcast_fraction)
                fractions = config.min_context_fraction, config.max_context_fraction
                parts = [(suffix if b else prefix)(s, *fractions, rank_rng)
                         for s, b in zip(parts, backcast, strict=True)]
            hidden = draw(rank_rng, len(parts), config.hide_channel_fraction)
            parts = [hide_channel(s, rank_rng) if h else s for s, h in zip(parts, hidden, strict=True)]
            context = collate(parts).to(ctx.device)
        batch = collate(chosen, origins=None if context is None else context.origins).to(ctx.device)
        kl_coef = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
        for group in optimizer.param_groups:
            group["lr"] = max(config.lr * config.lr_decay ** step, config.lr_min)
        model.reset_nfe()
        terms = ddp_model(batch, num_samples=config.iwae_samples, kl_coef=kl_coef, context=context)
        forward_nfe = model.nfe
        if not torch.isfinite(terms.loss):
            raise FloatingPointError(f"loss became {terms.loss.item()} at step {step}; lower --lr "
                                     f"or --grad-clip, or use a tighter solver tolerance")
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if averaged is not None:
            averaged.update_parameters(model)
        step += 1
        losses.append(terms.loss.item())
        bar.set_postfix(loss=f"{terms.loss.item():.3f}", kl=f"{terms.kl_per_series:.2f}",
                        nfe=forward_nfe, nfe_bwd=model.nfe - forward_nfe)
    return step, distributed.all_reduce_mean(float(np.mean(losses)), ctx)


def report_left_out(part: str, holdouts: list[Holdout], targets: list[Target]) -> None:
    """Say how many of a split's series its metrics leave out, and why, rather than report
    metrics of fewer series (or none) without a word."""
    left = len(holdouts) - sum(target.query.at.size > 0 for target in targets)
    if left:
        tqdm.write(f"{part}: {left} of {len(holdouts)} series left out of the metrics: the points given "
                   "to the model never observe every channel, which it was not trained to answer")


def holdouts_of(series: list[Series], config: TrainConfig, stream: int,
                max_span: float = math.inf) -> list[Holdout]:
    """The validation split of each series; one longer than ``max_span`` (any training series) is
    split over its most recent ``max_span``, which the model can be asked about."""
    rng = np.random.default_rng([config.seed, stream])
    return [h for s in series
            if (h := holdout_split(recent(s, max_span), config.extrap_fraction, config.interp_fraction, rng))]


def train(config: TrainConfig, train_series: list[Series], val_series: list[Series],
          ctx: distributed.Context | None = None, *, test_series: list[Series] = (),
          channels: list[str] | None = None, time_unit: str | None = None, out: str | Path | None = None,
          resume: bool = False, source: str = "memory") -> tuple[Forecaster, dict[str, Any]]:
    """Train on ``train_series``, select by ``val_series``; return the best model and its metrics.

    The series are in user units (normalisation is fitted here, on ``train_series``). The
    metrics are those of the selected epoch, plus, measured once at the end, the clean-future
    RMSE where the source provides one and the same measures on ``test_series``. With ``out``,
    rank 0 writes the best checkpoint to ``out/model`` (with its plot) and the training state to
    ``out/state`` after every epoch; ``resume`` continues from that state.
    """
    ctx = ctx or distributed.Context(0, 1, torch.device("cpu"))
    check_split(train_series, val_series, list(test_series), config.val_fraction)
    num_channels = train_series[0].num_channels
    channels = channels or [f"c{i}" for i in range(num_channels)]
    if len(channels) != num_channels:
        raise ValueError(f"{len(channels)} channel names for {num_channels}-channel series")
    for name, group in (("training", train_series), ("validation", val_series), ("test", test_series)):
        check_series(list(group), num_channels, name)
    held_out = {"validation": list(val_series), "test": list(test_series)}
    check_channels_observed(train_series, held_out, channels)
    torch.manual_seed(config.seed)
    out = Path(out) if out is not None else None

    check_spans([*train_series, *val_series, *test_series])
    normalization = Normalization.fit(train_series, time_span=config.time_span)
    check_values_covered(normalization, held_out, channels)
    model = LatentODE(config.model_config(num_channels)).to(ctx.device)
    optimizer = make_optimizer(config, model)
    averaged = weight_average(config, model)
    validated = model if averaged is None else averaged.module  # the weights that are measured and kept
    normalized = [Series(normalization.times(s.times), normalization.values(s.values), s.id)
                  for s in train_series]
    # What the model answers (service.model.forecaster): within the longest series it learned
    # from, and before a series' first observation only as far as training backcast.
    max_span = max(s.times[-1] - s.times[0] for s in train_series)
    if max_span <= 0:
        raise ValueError("every training series is a single observation: there is no motion to learn "
                         "and no span to forecast over")
    max_backcast = (1 - config.min_context_fraction) * max_span if config.backcast_fraction else 0.0
    checkpoint_config = {
        "model": model.config.to_dict(), "channels": channels, "normalization": normalization.to_dict(),
        "time_unit": time_unit, "max_span": max_span, "max_backcast": max_backcast,
        "unseen_channels": config.hide_channel_fraction > 0 and num_channels > 1,
        "data": {"source": source, "fingerprint": fingerprint([*train_series, *val_series, *test_series]),
                 "num_train": len(train_series), "num_val": len(val_series), "num_test": len(test_series)},
        "training": asdict(config), "metrics": {}, "finished": False,  # until the end of the run
    }
    check_validation_holds_out(val_series, [*train_series, *val_series, *test_series], config.extrap_fraction)
    holdouts = holdouts_of(val_series, config, stream=0, max_span=max_span)
    unseen = checkpoint_config["unseen_channels"]
    val_targets = holdout_targets(holdouts, max_span, unseen)
    if not any(target.query.at.size for target in val_targets):  # else epoch 1 would be kept, silently
        raise ValueError(f"none of the {len(val_series)} validation series can be measured as the "
                         f"server would ask them: within the longest training series ({max_span:.6g}) each "
                         "keeps too few points to hold some out, or the points given to the model never "
                         "observe every channel, which a model trained without --hide-channel-fraction "
                         "does not answer")
    if ctx.is_main:
        report_left_out("validation", holdouts, val_targets)
    val_backcasts = backcast_targets(val_series, config.extrap_fraction, max_span, max_backcast, unseen)
    val_targets = (val_targets + val_backcasts)[ctx.rank::ctx.world_size]
    measure = dict(batch_size=config.batch_size, num_samples=config.val_samples, seed=config.seed)

    start_epoch, step, best = 0, 0, None
    best_state = copy.deepcopy(validated.state_dict())
    if resume:
        if out is None:
            raise ValueError("resume needs the output directory of the earlier run")
        saved_config, best_state = load_checkpoint(out, KIND)
        was, now = saved_config["data"]["fingerprint"], checkpoint_config["data"]["fingerprint"]
        if was != now:  # the config may be the same while the file under --data changed
            raise CheckpointError(f"{out}: cannot resume: the data differ from the run's (fingerprint "
                                  f"{was[:12]} -> {now[:12]}); train afresh into another --out")
        start_epoch, step, best = load_train_state(train_state_path(out), model, optimizer, config, averaged)
        # The kept weights' own metrics: a Ctrl-C between the two saves of an epoch leaves the
        # checkpoint an epoch ahead of the training state.
        best = saved_config["metrics"] or best
        if start_epoch > config.epochs or start_epoch == config.epochs and saved_config.get("finished", True):
            raise ValueError(f"--resume: the run in {out} has already trained {start_epoch} epochs; --epochs "
                             f"counts all of a run's epochs (here {config.epochs}), not more ones: pass more "
                             f"than {start_epoch} to train on")
        if saved_config.get("finished", True) and ctx.is_main:  # the run goes on: not finished until it ends
            save_checkpoint(out, KIND, best_state, {**checkpoint_config, "metrics": best})
    ddp_model = distributed.wrap(model, ctx)
    if ctx.is_main:
        groups = {"training": train_series, "validation": val_series, "test": list(test_series)}
        tqdm.write(describe_data(source, channels, time_unit, groups, normalization, config.extrap_fraction))

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        step, train_loss = train_epoch(config, epoch, step, model, ddp_model, optimizer, normalized, ctx,
                                       averaged)
        forecaster = Forecaster(validated, checkpoint_config, "validation", "unsaved")
        metrics = evaluate(forecaster, val_targets, ctx, "val", **measure)
        metrics.update(val_mse=validation_score(metrics), epoch=epoch + 1, step=step, train_loss=train_loss,
                       obs_std=validated.obs_std.tolist())
        improved = best is None or score(metrics) < score(best)
        if improved:
            best, best_state = metrics, copy.deepcopy(validated.state_dict())
        if ctx.is_main:
            tqdm.write(f"epoch {epoch + 1}: loss {train_loss:.4f}  {describe(metrics)}  "
                       f"({time.perf_counter() - started:.0f} s){'  *best' if improved else ''}")
            if out is not None:
                if improved:
                    save_checkpoint(out, KIND, best_state, {**checkpoint_config, "metrics": best})
                save_train_state(train_state_path(out), model, optimizer, config, epoch + 1, step, best,
                                 averaged)
        distributed.barrier(ctx)
    if best is None:
        raise ValueError(f"nothing to return: epochs ({config.epochs}) leaves no epoch to train")

    model.load_state_dict(best_state)
    checkpoint_config["finished"] = True  # the model kept, measured on the test series below
    forecaster = Forecaster(model, checkpoint_config, "trained", "unsaved")
    test_holdouts = holdouts_of(list(test_series), config, 1, max_span)
    test_targets = holdout_targets(test_holdouts, max_span, unseen)
    if ctx.is_main:
        report_left_out("test", test_holdouts, test_targets)
    test_targets += backcast_targets(list(test_series), config.extrap_fraction, max_span, max_backcast,
                                     unseen)
    final_targets = {"val": future_targets(val_series, max_span, unseen),
                     "test": test_targets + future_targets(list(test_series), max_span, unseen)}
    for prefix_, targets in final_targets.items():
        best = {**best, **evaluate(forecaster, targets[ctx.rank::ctx.world_size], ctx, prefix_, **measure)}
    forecaster.metrics = best
    if out is not None and ctx.is_main:
        save_checkpoint(out, KIND, best_state, {**checkpoint_config, "metrics": best})
        forecaster = Forecaster.load(out)
        drawable = [h for h in holdouts if forecaster.unseen_channel(h.context.values) is None]
        if config.plot_series > 0 and drawable:
            plot_forecasts(forecaster, drawable[:config.plot_series], out / PLOT_FILE, seed=config.seed)
    distributed.barrier(ctx)
    return forecaster, best


# ----------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=kind, default=f.default, help=f"default: {f.default}")
    parser.add_argument("--out", default="runs/latent-ode",
                        help="checkpoint directory, servable; --resume's state is kept in OUT.train_state")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.train_state")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: torch's choice). Use 1 on a busy machine: "
                             "small ODE models slow down many times over with more threads than free cores")


def run(args: argparse.Namespace) -> None:
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    check_out(args.out, args.resume)
    check_threads(args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = distributed.setup(args.device)
    try:
        dataset = load_dataset(config)
        split = split_spirals if dataset.source == "spirals" else split_by_series
        train_series, val_series, test_series = split(dataset.series, config.val_fraction,
                                                      config.test_fraction, config.seed)
        _, metrics = train(config, train_series, val_series, ctx, test_series=test_series,
                           channels=dataset.channels, time_unit=dataset.time_unit, out=args.out,
                           resume=args.resume, source=dataset.source)
        if ctx.is_main:
            print(f"best: epoch {metrics['epoch']}, {describe(metrics)}; "
                  f"checkpoint in {Path(args.out)}")
    finally:
        distributed.teardown(ctx)
