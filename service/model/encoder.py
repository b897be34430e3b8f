"""Recognition networks: read a batch of observations backwards in time and give q(z0).

Both encoders run a GRU cell over the batch's time grid from the **last** observation to the
**first** (Chen et al. 2018, section 5; Rubanova et al. 2019), so that the final hidden state
sits at the first observation, where z0 lives. Their output layer maps that state to the mean
and standard deviation of the Gaussian posterior q(z0) = N(mu, sigma^2).

- :class:`RNNEncoder` (``rnn``, Chen et al.): between observations the hidden state is held;
  the GRU sees the observation, its mask and the time gap to the series' previous (later)
  observation, which is how a plain RNN learns about irregular spacing.
- :class:`ODERNNEncoder` (``odernn``, Rubanova et al.'s ODE-RNN): between observations the
  hidden state follows a learned ODE backwards in time; at an observation the GRU updates it.

In both, a grid time at which a series observed nothing (the time belongs to another series
of the batch) leaves that series' state untouched, and an ODE-RNN state is not evolved before
the series' last observation is read. So a series is encoded the same alone as in a batch:
exactly for ``rnn``, and within the encoder solver's tolerance for ``odernn`` (the batch's
extra grid times split its integration intervals). Missing channels enter the GRU as value 0
with mask 0; a row with no observed channel at all is skipped entirely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from service.model.batching import Batch
from service.model.solver import CountingFunc, SolverConfig, solve

ENCODER_KINDS = ("rnn", "odernn")

# q(z0)'s standard deviation never falls below this, so the KL and the log-density stay finite.
MIN_POSTERIOR_STD = 1e-4


class BackwardEncoder(nn.Module):
    """The shared backward loop; subclasses say how the state is carried between observations
    and what the GRU is fed."""

    def __init__(self, input_size: int, hidden_size: int, latent_dim: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = nn.GRUCell(input_size, hidden_size)
        self.to_posterior = nn.Linear(hidden_size, 2 * latent_dim)

    @property
    def nfe(self) -> int:
        return 0

    def carry(self, h: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor,
              started: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cell_input(self, values: torch.Tensor, mask: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and standard deviation of q(z0), each (B, latent_dim)."""
        times, observed = batch.times, batch.observed_rows
        num_series = batch.values.shape[0]
        h = batch.values.new_zeros(num_series, self.hidden_size)
        started = torch.zeros(num_series, dtype=torch.bool, device=h.device)
        later_time = times.new_zeros(num_series)  # time of the series' previously read observation
        for i in reversed(range(times.numel())):
            if i < times.numel() - 1:
                h = self.carry(h, times[i + 1], times[i], started)
            rows = observed[:, i]
            gap = torch.where(started, later_time - times[i], torch.zeros_like(later_time))
            mask = batch.mask[:, i]
            values = torch.where(mask, batch.values[:, i], torch.zeros_like(batch.values[:, i]))
            x = self.cell_input(values, mask.to(h.dtype), gap[:, None])
            h = torch.where(rows[:, None], self.cell(x, h), h)
            later_time = torch.where(rows, times[i], later_time)
            started = started | rows
        mean, raw_std = self.to_posterior(h).chunk(2, dim=-1)
        return mean, F.softplus(raw_std) + MIN_POSTERIOR_STD


class RNNEncoder(BackwardEncoder):
    """GRU over (value, mask, gap); the state is held between observations."""

    def __init__(self, num_channels: int, hidden_size: int, latent_dim: int):
        super().__init__(2 * num_channels + 1, hidden_size, latent_dim)

    def carry(self, h, t_from, t_to, started):
        return h

    def cell_input(self, values, mask, gap):
        return torch.cat([values, mask, gap], dim=-1)


class HiddenDynamics(nn.Module):
    """dh/dt of the ODE-RNN: an MLP with Tanh, as in Rubanova et al.'s ``ode_func_net``."""

    def __init__(self, hidden_size: int, units: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, units), nn.Tanh(), nn.Linear(units, hidden_size))

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class ODERNNEncoder(BackwardEncoder):
    """GRU over (value, mask); between observations the state follows an ODE backwards in time."""

    def __init__(self, num_channels: int, hidden_size: int, latent_dim: int, ode_units: int,
                 solver: SolverConfig):
        super().__init__(2 * num_channels, hidden_size, latent_dim)
        self.dynamics = CountingFunc(HiddenDynamics(hidden_size, ode_units))
        self.solver = solver

    @property
    def nfe(self) -> int:
        return self.dynamics.nfe

    def carry(self, h, t_from, t_to, started):
        evolved = solve(self.dynamics, h, torch.stack([t_from, t_to]), self.solver)[-1]
        return torch.where(started[:, None], evolved, h)

    def cell_input(self, values, mask, gap):
        return torch.cat([values, mask], dim=-1)
