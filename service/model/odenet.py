"""The ODE-Net feature block of Chen et al. 2018 (Table 1) and its three ways to get gradients.

The block maps a feature map ``h(0)`` to ``h(1)``, the solution at t=1 of ``dh/dt = f(t, h)``,
where ``f`` is norm → ReLU → ConcatConv2d → norm → ReLU → ConcatConv2d → norm (torchdiffeq's
``examples/odenet_mnist.py``; ConcatConv2d sees t as an extra input channel).

The interval [0, 1] is integrated as ``segments`` consecutive solves (1 by default). How the
gradient is obtained is a separate choice, ``gradient``:

- ``direct``: backpropagate through every operation of the solver. Exact for the computed
  forward pass; memory grows with the number of solver steps.
- ``adjoint``: torchdiffeq's ``odeint_adjoint`` solves the adjoint ODE backwards in time.
  Memory does not grow with the steps, but the backward solve re-integrates ``h`` from t=1 and
  drifts from the forward trajectory, so the gradient is only as good as the tolerances.
- ``checkpointed``: keep only the state at each segment boundary in the forward pass and,
  in the backward pass, recompute one segment at a time with autograd on
  (``torch.utils.checkpoint``). The recomputation repeats the forward solve step for step,
  so the gradient equals ``direct``'s exactly, at the memory of one segment plus the
  boundary states, for one extra forward solve.

``RKBlock`` is the RK-Net of the paper: the same field integrated by a fixed-step Runge–Kutta
method with backpropagation through it.

Both count function evaluations through :class:`~service.model.solver.CountingFunc`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from service.model.solver import CountingFunc, SolverConfig, solve

GRADIENT_MODES = ("direct", "adjoint", "checkpointed")


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class ConcatConv2d(nn.Module):
    """A 2-D convolution whose input gets the time t as one extra, constant channel."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, kernel_size, padding=padding)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time_channel = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([time_channel, x], dim=1))


class ConvODEFunc(nn.Module):
    """The vector field f(t, h): norm → ReLU → conv → norm → ReLU → conv → norm."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(h)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class FieldBlock(nn.Module):
    """A block that integrates the conv vector field ``odefunc``; ``nfe`` counts its evaluations."""

    odefunc: CountingFunc

    @property
    def nfe(self) -> int:
        return self.odefunc.nfe

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.odefunc.nfe = value


class ODEBlock(FieldBlock):
    """h(0) ↦ h(1) by an adaptive solver; see the module docstring for the gradient modes."""

    def __init__(self, channels: int, solver: SolverConfig, gradient: str = "direct", segments: int = 1):
        super().__init__()
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"unknown gradient mode {gradient!r}; known: {', '.join(GRADIENT_MODES)}")
        if segments < 1:
            raise ValueError("segments must be at least 1")
        self.odefunc = CountingFunc(ConvODEFunc(channels))
        self.solver = solver
        self.gradient = gradient
        self.segments = segments

    def _solve_segment(self, h: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        config = self.solver if self.gradient != "adjoint" else _with_adjoint(self.solver)
        return solve(self.odefunc, h, torch.stack([start, end]), config)[-1]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        bounds = torch.linspace(0.0, 1.0, self.segments + 1, dtype=h.dtype, device=h.device)
        recompute = self.gradient == "checkpointed" and torch.is_grad_enabled()
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            if recompute:
                h = checkpoint(self._solve_segment, h, start, end, use_reentrant=False)
            else:
                h = self._solve_segment(h, start, end)
        return h


def _with_adjoint(solver: SolverConfig) -> SolverConfig:
    return SolverConfig.from_dict({**solver.to_dict(), "adjoint": True})


class RKBlock(FieldBlock):
    """RK-Net: the ODE-Net's field integrated over [0, 1] by ``steps`` fixed RK steps."""

    def __init__(self, channels: int, method: str = "rk4", steps: int = 4):
        super().__init__()
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.odefunc = CountingFunc(ConvODEFunc(channels))
        self.solver = SolverConfig(method=method)  # no step_size: one step between grid points
        self.steps = steps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # An explicit grid, not step_size=1/steps: torchdiffeq rounds 1/(1/3) up to an extra step.
        grid = torch.linspace(0.0, 1.0, self.steps + 1, dtype=h.dtype, device=h.device)
        return solve(self.odefunc, h, grid, self.solver)[-1]
