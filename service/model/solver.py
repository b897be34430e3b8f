"""ODE solving with settings from a config, a step cap, and a count of function evaluations.

Every ODE in odecast (the latent dynamics, the ODE-RNN encoder, the ODE-Net block) is solved
through :func:`solve` (or, for serving without gradients, :func:`solve_for_inference`), so
that solver choice, tolerances and the step cap are configured in one place and recorded in
checkpoints, and so that a learned field that turns stiff raises :class:`SolverStepLimitError`
(a clean, reportable error) instead of running for ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from service.model.bounds import MAX_INT32, positive_number, whole_number
from service.model.dopri5 import StepLimitExceeded, dopri5_at
from service.model.fixed_grid import STEPS, fixed_grid_solve, grid_steps

ADAPTIVE_METHODS = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}
FIXED_METHODS = {"euler", "midpoint", "heun3", "rk4", "explicit_adams", "implicit_adams"}


class SolverStepLimitError(RuntimeError):
    """The solver needed more than ``max_num_steps`` steps: an adaptive one because the dynamics
    are too stiff, a fixed-step one because the span holds too many of its steps.

    ``problem``: which of :func:`solve_for_inference`'s problems it was, when it came from there;
    ``query``: which query of :meth:`service.model.forecaster.Forecaster.predict` it belongs to.
    """

    problem: int | None = None
    query: int | None = None


@dataclass(frozen=True)
class SolverConfig:
    """How to integrate an ODE.

    ``rtol``/``atol`` default to the latent_ode repository's 1e-3/1e-4 rather than torchdiffeq's
    1e-7/1e-9, which are far tighter than the models' own error. ``step_size`` applies to the
    fixed-grid methods only; without it they step between the requested times.
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    max_num_steps: int = 10_000
    step_size: float | None = None
    adjoint: bool = False

    def __post_init__(self) -> None:
        if self.method not in ADAPTIVE_METHODS | FIXED_METHODS:
            known = ", ".join(sorted(ADAPTIVE_METHODS | FIXED_METHODS))
            raise ValueError(f"unknown ODE method {self.method!r}; known: {known}")
        positive_number("rtol", self.rtol)
        positive_number("atol", self.atol)
        whole_number("max_num_steps", self.max_num_steps, 1, MAX_INT32)
        if self.step_size is not None:
            positive_number("step_size", self.step_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SolverConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown solver settings: {sorted(unknown)}")
        return cls(**data)


class CountingFunc(nn.Module):
    """Wraps a vector field ``f(t, y)`` and counts how often the solver calls it.

    The count covers every call: read it after the forward pass for the forward NFE, and again
    after ``backward()`` for the adjoint's backward NFE (the difference).

    ``nfe`` is kept in a plain list rather than as a module attribute: assigning a module
    attribute goes through ``nn.Module.__setattr__``, which cost about 8 microseconds per
    evaluation, a twentieth of a whole evaluation of the latent field when serving.
    """

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self._count = [0]

    @property
    def nfe(self) -> int:
        return self._count[0]

    @nfe.setter
    def nfe(self, value: int) -> None:
        self._count[0] = value

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._count[0] += 1
        return self.func(t, y)


def layer_weights(net: nn.Sequential) -> tuple[tuple[nn.Parameter, nn.Parameter], ...]:
    """(weight, bias) of each ``nn.Linear`` in ``net``, in order: the Parameter objects themselves.

    A plain tuple is not registered (or saved) a second time, and it stays current: loading a
    state dict copies into these Parameters, and ``.to()`` / ``.double()`` replace their data,
    not the Parameters (tests check both).
    """
    return tuple((layer.weight, layer.bias) for layer in net if isinstance(layer, nn.Linear))


def solver_options(config: SolverConfig) -> dict[str, Any]:
    if config.method in ADAPTIVE_METHODS:
        return {"max_num_steps": config.max_num_steps}
    if config.step_size is not None:
        return {"step_size": config.step_size}
    return {}


def solve(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, config: SolverConfig) -> torch.Tensor:
    """Integrate ``dy/dt = func(t, y)`` from ``y0`` at ``t[0]``; return the states at every ``t``.

    ``t`` must be strictly monotonic (increasing or decreasing). The result has shape
    ``(len(t), *y0.shape)``. Direct (non-adjoint) euler and rk4 go through
    :func:`service.model.fixed_grid.fixed_grid_solve`, torchdiffeq's schemes without its
    per-call overhead, which dominated the ODE-RNN encoder's many one-step solves.
    """
    if config.method in FIXED_METHODS and config.step_size is not None:
        _refuse_long_grid(t, config)
    if config.method in STEPS and not config.adjoint:
        return fixed_grid_solve(func, y0, t.to(y0.dtype), config.method, config.step_size)
    integrate = odeint_adjoint if config.adjoint else odeint
    kwargs: dict[str, Any] = {"rtol": config.rtol, "atol": config.atol, "method": config.method,
                              "options": solver_options(config)}
    if config.adjoint:
        kwargs["adjoint_options"] = solver_options(config)
    try:
        return integrate(func, y0, t.to(y0.dtype), **kwargs)
    except AssertionError as exc:
        message = str(exc)
        if "max_num_steps" in message or "underflow in dt" in message:
            raise _step_limit_error(message, config) from exc
        raise


def _refuse_long_grid(t: torch.Tensor, config: SolverConfig) -> None:
    """Apply ``max_num_steps`` to a fixed-step solve too, before its grid is laid out: the grid is
    a list (in torchdiffeq a tensor) of span / step_size times, so a checkpoint with rk4 at step
    1e-7 held its model's lock for ever on one request, its memory growing with the span. Without
    a step size the steps are the requested times, which the caller has bounded."""
    times = t.tolist()
    steps = grid_steps(times, config.step_size)
    if steps > config.max_num_steps:
        raise SolverStepLimitError(
            f"the ODE solver gave up: this model's fixed-step solver ({config.method}, step_size "
            f"{config.step_size} in its normalised time) would need {steps:.4g} steps to span the "
            f"series, more than max_num_steps={config.max_num_steps}; send a shorter window or nearer "
            "times, or use a checkpoint with a larger step_size")


def solve_for_inference(func: nn.Module, y0: torch.Tensor, times: Sequence[torch.Tensor],
                        config: SolverConfig) -> list[torch.Tensor]:
    """Independent problems without gradients, for serving: problem p starts from ``y0[p]`` at
    ``times[p][0]``; entry p of the result holds its states at every ``times[p]``. ``func`` must
    be autonomous (it ignores ``t``), as the latent dynamics are.

    Each problem's answer is the one it gets solved alone: dopri5 goes through
    :func:`service.model.dopri5.dopri5_at`, which solves them together with a step size and
    error norm per problem, and without torchdiffeq's per-requested-time Python overhead (the
    forecaster asks for a hundred times or more); other methods solve each problem through
    :func:`solve`. A :class:`SolverStepLimitError` from here carries the ``problem`` at fault.
    Training keeps :func:`solve`, whose gradients and adjoint this does not offer.
    """
    if config.method != "dopri5":
        with torch.inference_mode():
            states = []
            for p, t in enumerate(times):
                try:
                    states.append(solve(func, y0[p:p + 1], t, config)[:, 0])
                except SolverStepLimitError as exc:
                    exc.problem = p
                    raise
            return states
    try:
        return dopri5_at(func, y0, times, config.rtol, config.atol, config.max_num_steps)
    except StepLimitExceeded as exc:
        error = _step_limit_error(str(exc), config)
        error.problem = exc.problem
        raise error from exc


def _step_limit_error(message: str, config: SolverConfig) -> SolverStepLimitError:
    return SolverStepLimitError(
        f"the ODE solver gave up ({message}); the dynamics are too stiff for "
        f"method={config.method}, rtol={config.rtol}, atol={config.atol}, "
        f"max_num_steps={config.max_num_steps}")
