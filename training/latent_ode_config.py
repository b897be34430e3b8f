"""The latent-ODE trainer's settings: one dataclass, every value checked when it is made.

``python -m training latent-ode --help`` lists them as flags (:func:`training.latent_ode.add_arguments`);
checkpoints store them under ``training``, and ``--resume`` refuses a run whose settings changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from service.model.bounds import whole_number
from service.model.latent_ode import LatentODEConfig
from service.model.solver import SolverConfig

# TrainConfig fields passed to LatentODEConfig under the same name.
ARCHITECTURE = ("encoder", "latent_dim", "encoder_hidden", "encoder_ode_units", "dynamics_hidden",
                "dynamics_layers", "activation", "decoder_hidden", "obs_std_init")


OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}
# IWAE and validation samples multiply the memory of every batch (1e9 asked for 80 GB after a full
# epoch); a served request may draw at most ODECAST_MAX_SAMPLES (default 256), and the sampling
# error of a bound or a mean falls only as 1/sqrt(samples), so more than this buys nothing.
MAX_SAMPLES = 256
# The largest seed torch's generators take; the data's streams (numpy's) read all of its bits.
MAX_SEED = 2**64 - 1


@dataclass
class TrainConfig:
    # data: "spirals" or the path of a CSV file
    data: str = "spirals"
    spirals_count: int = 1000
    spirals_observed: int = 100
    spirals_noise: float = 0.3
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # model: the network's own defaults (Chen et al.'s spiral sizes)
    encoder: str = LatentODEConfig.encoder
    latent_dim: int = LatentODEConfig.latent_dim
    encoder_hidden: int = LatentODEConfig.encoder_hidden
    encoder_ode_units: int = LatentODEConfig.encoder_ode_units
    dynamics_hidden: int = LatentODEConfig.dynamics_hidden
    dynamics_layers: int = LatentODEConfig.dynamics_layers
    activation: str = LatentODEConfig.activation
    decoder_hidden: int = LatentODEConfig.decoder_hidden
    obs_std_init: float = LatentODEConfig.obs_std_init
    time_span: float = 1.0          # normalised time: the median training series spans this
    # latent ODE solver; the ODE-RNN encoder's is encoder_method at encoder_step_size
    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    max_num_steps: int = 10_000
    adjoint: bool = False
    encoder_method: str = "euler"  # Rubanova et al.'s, at 1/50 of the time span
    encoder_step_size: float = 0.02
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-2
    lr_decay: float = 0.999         # per step, as in latent_ode; never below lr_min
    lr_min: float = 1e-3
    epochs: int = 50
    batch_size: int = 50
    iwae_samples: int = 1
    kl_warmup_epochs: float = 0.0
    grad_clip: float = 10.0
    ema_decay: float = 0.0          # > 0: validate and keep an exponential moving average of the weights
    min_window_fraction: float = 0.25  # < 1: each step crops each series to a random window
    min_keep_fraction: float = 0.3  # < 1: each step keeps a random share of each series' points
    min_context_fraction: float = 0.5  # < 1: the encoder reads only a random first share of each
    max_context_fraction: float = 1.0  # series, between these two fractions of its points
    backcast_fraction: float = 0.25  # of the series, those whose encoder reads a last share instead
    # (none when it reads every point, min_context_fraction 1: such a model does not backcast)
    hide_channel_fraction: float = 0.0  # of the series, those whose encoder reads one channel less
    # Settings added after runs were saved without them, and the value such runs trained with.
    ADDED_SETTINGS: ClassVar[dict[str, Any]] = {"backcast_fraction": 0.0, "hide_channel_fraction": 0.0}
    # validation
    extrap_fraction: float = 0.5
    interp_fraction: float = 0.2
    val_samples: int = 16
    plot_series: int = 4

    def __post_init__(self) -> None:
        """Every setting checked here, before any data is read: a bad flag is refused at once, and
        none can train silently wrong (a negative batch size once trained nothing and saved the
        untrained weights)."""
        for name in ("spirals_count", "spirals_observed", "epochs", "batch_size", "max_num_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("iwae_samples", "val_samples"):
            whole_number(name, getattr(self, name), 1, MAX_SAMPLES)
        whole_number("seed", self.seed, 0, MAX_SEED)
        if self.plot_series < 0:
            raise ValueError(f"plot_series must be 0 or more, got {self.plot_series}")
        for name in ("lr", "lr_decay", "grad_clip", "time_span"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        if self.lr_decay > 1:  # the rate is multiplied by it every step: above 1 it grows until it diverges
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not (0 <= self.lr_min <= self.lr and 0 <= self.ema_decay < 1 and self.kl_warmup_epochs >= 0):
            raise ValueError("need 0 <= lr_min <= lr, 0 <= ema_decay < 1 and kl_warmup_epochs >= 0")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ValueError("need val_fraction and test_fraction in [0, 1) with a sum below 1, got "
                             f"{self.val_fraction} and {self.test_fraction}")
        # Checked here, once, rather than where the fractions are used (per series per step, and
        # never by the latent-ODE trainer when min_context_fraction is 1).
        if not 0 < self.min_context_fraction <= self.max_context_fraction <= 1:
            raise ValueError("need 0 < min_context_fraction <= max_context_fraction <= 1, got "
                             f"{self.min_context_fraction} and {self.max_context_fraction}")
        if not 0 <= self.backcast_fraction < 1:  # at 1 no series would train forecasts
            raise ValueError(f"backcast_fraction must be in [0, 1), got {self.backcast_fraction}")
        if not 0 <= self.hide_channel_fraction <= 1:
            raise ValueError(f"hide_channel_fraction must be in [0, 1], got {self.hide_channel_fraction}")
        for name in ("min_window_fraction", "min_keep_fraction", "interp_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 < self.extrap_fraction < 1:  # at 1 no series keeps a context to forecast from
            raise ValueError(f"extrap_fraction must be in (0, 1), got {self.extrap_fraction}")
        self.model_config(num_channels=1)  # the architecture's and the solvers' own checks
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")

    def model_config(self, num_channels: int) -> LatentODEConfig:
        """The network's config: the architecture fields above, the solvers, the data's channels."""
        architecture = {name: getattr(self, name) for name in ARCHITECTURE}
        return LatentODEConfig(
            num_channels=num_channels, **architecture,
            solver=SolverConfig(method=self.method, rtol=self.rtol, atol=self.atol,
                                max_num_steps=self.max_num_steps, adjoint=self.adjoint),
            encoder_solver=SolverConfig(method=self.encoder_method, step_size=self.encoder_step_size))
