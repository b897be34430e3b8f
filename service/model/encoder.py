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
up to float rounding for ``rnn`` (each series runs as its own sequence of its own rows), and
within the encoder solver's tolerance for ``odernn`` (the batch's extra grid times split its
integration intervals). Missing channels enter the GRU as value 0
with mask 0; a row with no observed channel at all is skipped entirely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_sequence

from service.model.batching import Batch
from service.model.solver import CountingFunc, SolverConfig, layer_weights, solve

ENCODER_KINDS = ("rnn", "odernn")

# q(z0)'s standard deviation never falls below this, so the KL and the log-density stay finite.
MIN_POSTERIOR_STD = 1e-4


class BackwardEncoder(nn.Module):
    """What both encoders share: the GRU cell and the map from its final state to q(z0)."""

    def __init__(self, input_size: int, hidden_size: int, latent_dim: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = nn.GRUCell(input_size, hidden_size)
        self.to_posterior = nn.Linear(hidden_size, 2 * latent_dim)

    @property
    def nfe(self) -> int:
        return 0

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z0)'s mean and standard deviation from the hidden state at the first observation."""
        mean, raw_std = self.to_posterior(h).chunk(2, dim=-1)
        return mean, F.softplus(raw_std) + MIN_POSTERIOR_STD


class RNNEncoder(BackwardEncoder):
    """GRU over (value, mask, gap); the state is held between observations.

    Because nothing happens between observations, each series is simply its own observed rows,
    last to first, and the whole batch runs as one packed sequence through torch's fused GRU
    with the cell's weights: the same GRU update as the shared step-by-step loop, without a
    Python step per grid time (a batch's union grid has every series' times, so that loop took
    B x n steps for B series of n observations; this takes n steps inside torch).
    """

    def __init__(self, num_channels: int, hidden_size: int, latent_dim: int):
        super().__init__(2 * num_channels + 1, hidden_size, latent_dim)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        sequences = []
        for values, mask, observed in zip(batch.values, batch.mask, batch.observed_rows, strict=True):
            rows = observed.nonzero().squeeze(1).flip(0)                # last observation first
            times = batch.times[rows]
            gap = torch.cat([times.new_zeros(1), times[:-1] - times[1:]])  # to the one read before
            mask = mask[rows]
            values = torch.where(mask, values[rows], torch.zeros_like(values[rows]))
            sequences.append(torch.cat([values, mask.to(values.dtype), gap[:, None]], dim=-1))
        packed = pack_sequence(sequences, enforce_sorted=False)
        cell = self.cell
        h0 = packed.data.new_zeros(1, len(sequences), self.hidden_size)
        _, h = torch.gru(packed.data, packed.batch_sizes, h0,
                         [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh],
                         True, 1, 0.0, self.training, False)
        return self.posterior(h[0, packed.unsorted_indices])


class HiddenDynamics(nn.Module):
    """dh/dt of the ODE-RNN: an MLP with Tanh, as in Rubanova et al.'s ``ode_func_net``.

    ``forward`` applies the layers' functions itself, on weights taken once
    (:func:`service.model.solver.layer_weights`), rather than calling the Sequential: the
    encoder evaluates this field at least once per grid time of a batch, and three sub-module
    calls cost more than the small matmuls they wrap.
    """

    def __init__(self, hidden_size: int, units: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, units), nn.Tanh(), nn.Linear(units, hidden_size))
        self.weights = layer_weights(self.net)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        (first_weight, first_bias), (last_weight, last_bias) = self.weights
        return F.linear(torch.tanh(F.linear(h, first_weight, first_bias)), last_weight, last_bias)


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

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and standard deviation of q(z0), each (B, latent_dim)."""
        times, observed, mask = batch.times, batch.observed_rows, batch.mask
        h = batch.values.new_zeros(batch.values.shape[0], self.hidden_size)
        # Everything that does not depend on h, for all grid times at once: the GRU inputs, and
        # whether a series has an observation after grid time i (only then is its state evolved).
        inputs = torch.cat([torch.where(mask, batch.values, torch.zeros_like(batch.values)),
                            mask.to(h.dtype)], dim=-1).unbind(1)
        started = (observed.flip(1).cumsum(1).flip(1) > observed)[..., None].unbind(1)
        reads = observed[..., None].unbind(1)
        intervals = torch.stack([times[1:], times[:-1]], dim=1).unbind()
        for i in reversed(range(times.numel())):
            if i < times.numel() - 1:
                evolved = solve(self.dynamics, h, intervals[i], self.solver)[-1]
                h = torch.where(started[i], evolved, h)
            h = torch.where(reads[i], self.cell(inputs[i], h), h)
        return self.posterior(h)
