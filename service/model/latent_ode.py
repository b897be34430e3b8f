"""The latent-ODE VAE (Chen et al. 2018, section 5; Rubanova et al. 2019) and its training loss.

Generative model: z0 ~ N(0, I); z(t) solves dz/dt = f(z) from z0 at the first observation
the encoder reads (t = 0, see :mod:`service.model.batching`), forwards and, for earlier
points, backwards; each observed value is x(t)_c ~ N(decoder(z(t))_c, obs_std_c^2).
Recognition model: an encoder (:mod:`service.model.encoder`) gives q(z0 | x) = N(mu, sigma^2).

Two choices differ from the papers, on purpose:

- ``obs_std`` is a learned per-channel parameter (both papers fix it: 0.3 in the spiral example,
  0.01 in latent_ode). A forecasting service has to report calibrated uncertainty on data it
  has never seen, and a fixed noise level is right only for the data it was tuned on.
- The dynamics are an MLP of z alone (autonomous), as in both papers; this is what lets every
  series start at its own t = 0.

Loss: the negative importance-weighted bound (IWAE, Burda et al. 2016) with ``k`` samples of
z0, ``log w_k = log p(x | z_k) - kl_coef * (log q(z_k) - log p(z_k))``, bound =
``logsumexp_k log w_k - log k``. With ``k = 1`` the sampled log-ratio is replaced by the
analytic KL(q || N(0, I)), which makes it the ordinary ELBO with lower variance.
``kl_coef`` < 1 is KL annealing. Only observed entries enter the likelihood. The returned loss
is the negative bound summed over the batch divided by the number of observed values
(nats per observed value), so its scale does not depend on series length or batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from service.model.batching import Batch
from service.model.bounds import MAX_DEPTH, MAX_WIDTH, positive_number, whole_number
from service.model.encoder import ENCODER_KINDS, ODERNNEncoder, RNNEncoder
from service.model.solver import CountingFunc, SolverConfig, layer_weights, solve, solve_for_inference

ACTIVATIONS = {"elu": nn.ELU, "tanh": nn.Tanh, "softplus": nn.Softplus}
# The same, as functions for LatentDynamics; in place where torch has it (a hidden layer's
# pre-activation is not needed again, also not by autograd), which saves an allocation per call.
ACTIVATION_FUNCTIONS = {"elu": partial(F.elu, inplace=True), "tanh": torch.tanh_, "softplus": F.softplus}


@dataclass(frozen=True)
class LatentODEConfig:
    """Everything needed to rebuild the network; stored in the checkpoint.

    Defaults are Chen et al.'s spiral sizes (latent 4, encoder 25, one hidden layer of 20 in
    the dynamics and in the decoder). ``obs_std_init`` is in normalised value units.
    ``encoder_solver`` integrates the ODE-RNN's hidden state (Rubanova et al. use small Euler
    steps there); ``solver`` integrates the latent dynamics.
    """

    num_channels: int
    latent_dim: int = 4
    encoder: str = "rnn"
    encoder_hidden: int = 25
    encoder_ode_units: int = 25
    dynamics_hidden: int = 20
    dynamics_layers: int = 1
    activation: str = "elu"
    decoder_hidden: int = 20
    obs_std_init: float = 0.1
    solver: SolverConfig = field(default_factory=SolverConfig)
    encoder_solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="euler", step_size=0.02))

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_KINDS:
            raise ValueError(f"encoder must be one of {ENCODER_KINDS}, got {self.encoder!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        # Bounded (see service.model.bounds) before anything is built: a checkpoint's 10**6
        # layers, or a latent_dim of 10**30, used to be built, or to overflow, at start-up.
        for name in ("num_channels", "latent_dim", "encoder_hidden", "encoder_ode_units", "dynamics_hidden"):
            whole_number(name, getattr(self, name), 1, MAX_WIDTH)
        whole_number("dynamics_layers", self.dynamics_layers, 1, MAX_DEPTH)
        whole_number("decoder_hidden (0: a linear decoder)", self.decoder_hidden, 0, MAX_WIDTH)
        positive_number("obs_std_init", self.obs_std_init)  # finite too: inf passed the old '> 0'

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["solver"] = self.solver.to_dict()
        data["encoder_solver"] = self.encoder_solver.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentODEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model settings: {sorted(unknown)}")
        data = dict(data)
        for key in ("solver", "encoder_solver"):
            if key in data:
                try:
                    data[key] = SolverConfig.from_dict(data[key])
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from exc
        return cls(**data)


def mlp(sizes: list[int], activation: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(activation())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class LatentDynamics(nn.Module):
    """dz/dt = f(z): autonomous, so ``t`` is ignored.

    ``forward`` calls the layers' functions on their weights instead of calling the
    ``nn.Sequential``: a solve evaluates f dozens of times on a few hundred numbers, and the
    module machinery of five sub-module calls cost as much as their arithmetic (about half of
    each evaluation when serving). It takes the weights from a tuple made once, not through
    each layer's ``.weight``: every such lookup goes through ``nn.Module.__getattr__``, and the
    six of them cost about 0.9 ms of a typical 14 ms forecast (56 evaluations). ``net`` stays
    the Sequential, so checkpoints keep its layout.
    """

    def __init__(self, config: LatentODEConfig):
        super().__init__()
        hidden = [config.dynamics_hidden] * config.dynamics_layers
        self.net = mlp([config.latent_dim, *hidden, config.latent_dim], ACTIVATIONS[config.activation])
        self.activation = ACTIVATION_FUNCTIONS[config.activation]
        self.weights = layer_weights(self.net)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        *hidden, (weight, bias) = self.weights
        for hidden_weight, hidden_bias in hidden:
            z = self.activation(F.linear(z, hidden_weight, hidden_bias))
        return F.linear(z, weight, bias)


@dataclass
class LossTerms:
    """``loss`` carries gradients; the rest are detached floats for logging."""

    loss: torch.Tensor
    nll_per_value: float
    kl_per_series: float
    num_values: int


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


class LatentODE(nn.Module):
    def __init__(self, config: LatentODEConfig):
        super().__init__()
        self.config = config
        if config.encoder == "rnn":
            self.encoder = RNNEncoder(config.num_channels, config.encoder_hidden, config.latent_dim)
        else:
            self.encoder = ODERNNEncoder(config.num_channels, config.encoder_hidden, config.latent_dim,
                                         config.encoder_ode_units, config.encoder_solver)
        self.dynamics = CountingFunc(LatentDynamics(config))
        decoder_sizes = [config.latent_dim, config.decoder_hidden, config.num_channels]
        # In place: a decoded batch of samples is large, and the hidden layer's output is not needed again.
        self.decoder = mlp([n for n in decoder_sizes if n], partial(nn.ReLU, inplace=True))
        self.log_obs_std = nn.Parameter(torch.full((config.num_channels,), math.log(config.obs_std_init)))

    @property
    def obs_std(self) -> torch.Tensor:
        return self.log_obs_std.exp()

    @property
    def nfe(self) -> int:
        """Function evaluations of the encoder's and the latent ODE since :meth:`reset_nfe`."""
        return self.encoder.nfe + self.dynamics.nfe

    def reset_nfe(self) -> None:
        self.dynamics.nfe = 0
        if isinstance(self.encoder, ODERNNEncoder):
            self.encoder.dynamics.nfe = 0

    def posterior(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z0 | x), each (B, latent_dim)."""
        return self.encoder(batch)

    def latent_path(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """z at ``times`` (increasing, holding 0, z0's time): shape (T, *z0.shape). Times before 0
        (backcasts, which the trainer scores with ``context``) are solved backwards from z0."""
        ahead = int(torch.searchsorted(times, times.new_zeros(())))    # times[ahead] == 0
        path = z0[None] if times.numel() - ahead == 1 else solve(self.dynamics, z0, times[ahead:],
                                                                  self.config.solver)
        if ahead == 0:
            return path
        behind = solve(self.dynamics, z0, times[:ahead + 1].flip(0), self.config.solver)[1:].flip(0)
        return torch.cat([behind, path])

    def latent_states(self, z0: torch.Tensor, times: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """For serving, without gradients: z0 is (P, ..., latent_dim), one row per independent
        problem, and entry p of the result is z at ``times[p]`` (monotonic, from 0), as if that
        problem were solved alone (:func:`service.model.solver.solve_for_inference`)."""
        return solve_for_inference(self.dynamics, z0, times, self.config.solver)

    def decode(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Decoder means at ``times`` (as :meth:`latent_path` takes them): shape (T, *z0.shape[:-1], C)."""
        return self.decoder(self.latent_path(z0, times))

    def forward(self, batch: Batch, num_samples: int = 1, kl_coef: float = 1.0,
                generator: torch.Generator | None = None, context: Batch | None = None) -> LossTerms:
        """Negative ELBO (``num_samples`` = 1) or IWAE bound, in nats per observed value.

        ``context``, when given, is what the encoder reads instead of ``batch``: a part of each
        series, whose first observation is the series' t = 0 in both (``batch`` collated with
        ``context.origins``). The likelihood still covers all of ``batch``, so the model is
        trained to forecast what it has not seen after that part, and to backcast what lies
        before it.
        """
        mean, std = self.posterior(batch if context is None else context)
        eps = torch.randn((num_samples, *mean.shape), generator=generator, dtype=mean.dtype,
                          device=mean.device)
        z0 = mean + std * eps                                     # (K, B, L)
        predicted = self.decode(z0, batch.times).permute(1, 2, 0, 3)  # (K, B, T, C)
        log_density = gaussian_log_density(batch.values, predicted, self.obs_std)
        log_lik = torch.where(batch.mask, log_density, torch.zeros_like(log_density)).sum(dim=(2, 3))
        if num_samples == 1:
            divergence = (0.5 * (std ** 2 + mean ** 2 - 1) - torch.log(std)).sum(-1)[None]
        else:
            log_q = gaussian_log_density(z0, mean, std).sum(-1)
            log_p = gaussian_log_density(z0, torch.zeros_like(z0), torch.ones_like(z0)).sum(-1)
            divergence = log_q - log_p
        log_weights = log_lik - kl_coef * divergence               # (K, B)
        bound = torch.logsumexp(log_weights, dim=0) - math.log(num_samples)
        num_values = int(batch.mask.sum())
        count = max(num_values, 1)
        return LossTerms(loss=-bound.sum() / count,
                         nll_per_value=-log_lik.mean(0).sum().item() / count,
                         kl_per_series=divergence.mean().item(),
                         num_values=num_values)
