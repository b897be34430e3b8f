"""The RNN baseline of Chen et al. 2018, Table 2: an autoregressive GRU fed the time gap.

At each point the GRU reads (value, mask, time gap to the *next* requested time) and predicts
the value at that next time. To extrapolate it reads all observations, then feeds its own
prediction back in, with the gap to the next requested time, one step at a time, so errors
compound: the weakness Table 2 shows.

Training minimises the mean squared error (a Gaussian likelihood with fixed std) of its
predictions of the observed points. With ``min_context_fraction`` = 1 every prediction is one
step ahead from the true previous points (teacher forcing, as Chen et al.'s baseline). Below 1
it is trained the way it is used: it reads a random first part of each series and predicts the
rest free-running.

:func:`train_gru` takes the latent-ODE trainer's own config, so it gets the same budget and
rules: the same normalisation (fitted on the training series), epochs, minibatch size, Adam
with the same per-step learning rate decay and gradient clipping, the same moving average of
the weights when ``ema_decay`` is set (:func:`training.latent_ode.weight_average`), and the same augmentations
with the trainer's own functions (random window, random thinning, random context:
:func:`training.augment.window`, :func:`~training.augment.subsample`,
:func:`~training.augment.context_count`). The epoch kept is the one with the lowest
extrapolation MSE on the same validation holdouts (:func:`training.latent_ode.holdouts_of`; it
cannot interpolate, so only their tails count).

It is a benchmark baseline, not a served model, so it lives here and not in service/. Missing
channels enter as 0 with mask 0 and are left out of the loss.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from service.model.series import Normalization, Series
from training.augment import context_count, subsample, window
from training.holdout import Holdout
from training.latent_ode import holdouts_of, weight_average
from training.latent_ode_config import TrainConfig


class GRUBaseline(nn.Module):
    def __init__(self, num_channels: int, hidden_size: int = 25):
        super().__init__()
        self.gru = nn.GRU(2 * num_channels + 1, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_channels)

    @staticmethod
    def step_inputs(values: torch.Tensor, mask: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """(B, T, 2C + 1): observed values (0 where missing), the mask, the gap to the next time."""
        return torch.cat([torch.where(mask, values, 0.0), mask.to(values.dtype), gaps[..., None]], dim=-1)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, hidden = self.gru(inputs, hidden)
        return self.head(outputs), hidden


def padded(series: list[Series]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """times (B, T), values (B, T, C), mask (B, T, C), lengths (B,).

    After a series' end its last time repeats (gap 0) and values are 0 with mask 0.
    """
    longest = max(s.times.size for s in series)
    channels = series[0].num_channels
    times = np.zeros((len(series), longest))
    values = np.zeros((len(series), longest, channels))
    mask = np.zeros((len(series), longest, channels), dtype=bool)
    for row, s in enumerate(series):
        n = s.times.size
        times[row, :n], times[row, n:] = s.times, s.times[-1]
        values[row, :n], mask[row, :n] = np.nan_to_num(s.values), s.mask
    lengths = torch.tensor([s.times.size for s in series])
    return (torch.tensor(times, dtype=torch.float32), torch.tensor(values, dtype=torch.float32),
            torch.from_numpy(mask), lengths)


def rollout(model: GRUBaseline, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
            context: torch.Tensor) -> torch.Tensor:
    """Predictions (B, T-1, C) for positions 1..T-1 of each padded sequence.

    Step i reads position i and the gap to position i+1. Positions before ``context`` (B,) are
    read from ``values`` (teacher forcing); from ``context`` on, the model reads its own
    prediction for that position, every channel marked observed (free running).
    """
    hidden = None
    prediction = torch.zeros_like(values[:, 0])
    every_channel = torch.ones_like(mask[:, 0])
    outputs = []
    for i in range(times.shape[1] - 1):
        own = (i >= context)[:, None]
        value = torch.where(own, prediction, values[:, i])
        observed = torch.where(own, every_channel, mask[:, i])
        step = model.step_inputs(value[:, None], observed[:, None], (times[:, i + 1] - times[:, i])[:, None])
        output, hidden = model(step, hidden)
        prediction = output[:, 0]
        outputs.append(prediction)
    return torch.stack(outputs, dim=1)


def forecast_loss(model: GRUBaseline, series: list[Series], context: list[int]) -> torch.Tensor:
    """Mean squared error over every observed point after the first; ``context[b]`` of series b's
    points are read, the rest are predicted free-running (all read: one-step-ahead prediction)."""
    times, values, mask, lengths = padded(series)
    predicted = rollout(model, times, values, mask, torch.tensor(context))
    in_series = torch.arange(1, times.shape[1])[None, :, None] < lengths[:, None, None]
    target_mask = mask[:, 1:] & in_series
    squared = torch.where(target_mask, (predicted - values[:, 1:]) ** 2, 0.0)
    return squared.sum() / target_mask.sum().clamp(min=1)


@torch.no_grad()
def free_run(model: GRUBaseline, series: list[Series], future_times: list[np.ndarray]) -> list[np.ndarray]:
    """Predictions (H_b, C) at each series' ``future_times`` (increasing, after its last point)."""
    extended = []
    for s, future in zip(series, future_times, strict=True):
        if future.size == 0 or future[0] <= s.times[-1] or np.any(np.diff(future) <= 0):
            raise ValueError(f"series {s.id!r}: future times must be non-empty, increasing "
                             "and after the last observation")
        unknown = np.full((future.size, s.num_channels), np.nan)
        extended.append(Series(np.concatenate([s.times, future]), np.concatenate([s.values, unknown]), s.id))
    times, values, mask, _ = padded(extended)
    context = torch.tensor([s.times.size for s in series])
    predicted = rollout(model.eval(), times, values, mask, context).double().numpy()
    return [predicted[row, s.times.size - 1:s.times.size - 1 + future.size]
            for row, (s, future) in enumerate(zip(series, future_times, strict=True))]


@dataclass
class GRUForecaster:
    model: GRUBaseline
    normalization: Normalization

    def extrapolate(self, series: list[Series], future_times: list[np.ndarray]) -> list[np.ndarray]:
        """Free-running forecasts in user units at each series' ``future_times`` (user units)."""
        norm = self.normalization
        normalized = [Series(norm.times(s.times), norm.values(s.values), s.id) for s in series]
        predicted = free_run(self.model.eval(), normalized, [norm.times(f) for f in future_times])
        return [norm.unvalues(p) for p in predicted]


def extrapolation_mse(forecaster: GRUForecaster, holdouts: list[Holdout]) -> float:
    """MSE (normalised units) on the holdouts' tails, each forecast from its context."""
    holdouts = [h for h in holdouts if h.extrap_times.size]
    if not holdouts:
        raise ValueError("no validation series is long enough to hold its tail out")
    predicted = forecaster.extrapolate([h.context for h in holdouts], [h.extrap_times for h in holdouts])
    scale = np.asarray(forecaster.normalization.std)
    errors = [((p - h.extrap_values) / scale).ravel() for p, h in zip(predicted, holdouts, strict=True)]
    return float(np.nanmean(np.concatenate(errors) ** 2))


def train_gru(config: TrainConfig, train_series: list[Series], val_series: list[Series]
              ) -> tuple[GRUForecaster, dict]:
    """Train with the latent-ODE trainer's ``config`` (``encoder_hidden`` is the GRU's size) on
    ``train_series`` (user units); keep the epoch with the best validation extrapolation MSE."""
    torch.manual_seed(config.seed)
    normalization = Normalization.fit(train_series, time_span=config.time_span)
    normalized = [Series(normalization.times(s.times), normalization.values(s.values), s.id)
                  for s in train_series]
    model = GRUBaseline(train_series[0].num_channels, config.encoder_hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    averaged = weight_average(config, model)
    validated = model if averaged is None else averaged.module  # the weights that are measured and kept
    forecaster = GRUForecaster(validated, normalization)
    holdouts = holdouts_of(val_series, config, stream=0)
    step, best, best_state = 0, None, copy.deepcopy(validated.state_dict())
    for epoch in range(config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(normalized))
        model.train()
        for first in range(0, len(order), config.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = max(config.lr * config.lr_decay ** step, config.lr_min)
            chosen = [normalized[i] for i in order[first:first + config.batch_size]]
            if config.min_window_fraction < 1:
                chosen = [window(c, config.min_window_fraction, rng) for c in chosen]
            if config.min_keep_fraction < 1:
                chosen = [subsample(c, config.min_keep_fraction, rng) for c in chosen]
            context = [context_count(c.times.size, config.min_context_fraction,
                                     config.max_context_fraction, rng) for c in chosen]
            loss = forecast_loss(model, chosen, context)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
        val_mse = extrapolation_mse(forecaster, holdouts)
        if not math.isfinite(val_mse):
            raise FloatingPointError(f"GRU validation MSE became {val_mse} in epoch {epoch + 1}")
        if best is None or val_mse < best["val_extrap_mse"]:
            best = {"epoch": epoch + 1, "step": step, "val_extrap_mse": val_mse}
            best_state = copy.deepcopy(validated.state_dict())
    if best is None:
        raise ValueError(f"nothing to return: epochs ({config.epochs}) leaves no epoch to train")
    validated.load_state_dict(best_state)
    return forecaster, best
