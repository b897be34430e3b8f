"""Euler and RK4 as torchdiffeq computes them on a fixed grid, without its per-call overhead.

The ODE-RNN encoder solves one short interval per time of a batch's grid: about 200 solves of
one step each per training step on the spirals. A call to torchdiffeq's ``odeint`` spends
about 0.8 ms on checking its inputs and building a solver, several times what a step costs,
and that overhead made the ODE-RNN three times slower to train than the GRU encoder.

These are the same schemes: ``euler``, and ``rk4``, which in torchdiffeq is the 3/8 rule
(``rk4_alt_step_func``), on the same grid (from the start in steps of ``step_size``, the last
step cut short to end on the target; without a step size, one step between requested times).
Decreasing times are stepped with a negative ``dt``, which is what torchdiffeq's time
reversal amounts to. For two requested times, or without a step size (every fixed-grid solve
in odecast), the answers equal torchdiffeq's up to float rounding: the stage sums are fused
into ``add`` with ``alpha``, the grid is laid out in Python floats rather than in the tensor's
dtype, and a last step shorter than 1e-9 of ``step_size`` (a rounding artefact of a span that
is a whole number of steps) is not taken. For more times with a step size, each interval
between requested times gets its own grid, where torchdiffeq lays one grid over the whole
span and interpolates linearly in between: this is at least as accurate. Gradients flow
through autograd as they do through torchdiffeq's direct (non-adjoint) solve.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

ONE_THIRD = 1.0 / 3.0
TWO_THIRDS = 2.0 / 3.0
# A last step shorter than this share of step_size is rounding, not part of the span.
GRID_SLACK = 1e-9


def euler_step(func: Field, t0: float, dt: float, y0: torch.Tensor) -> torch.Tensor:
    """The state after one Euler step of ``dt`` from ``y0`` at ``t0``."""
    return torch.add(y0, func(torch.tensor(t0, dtype=y0.dtype, device=y0.device), y0), alpha=dt)


def rk4_step(func: Field, t0: float, dt: float, y0: torch.Tensor) -> torch.Tensor:
    """The state after one 3/8-rule step of ``dt`` from ``y0`` at ``t0``.

    Each stage input is one ``add`` and a few in-place ``add_`` with the step's coefficients as
    ``alpha``: fewer tensor operations than torchdiffeq's separate products and sums.
    """
    stage_times = torch.tensor([t0, t0 + dt * ONE_THIRD, t0 + dt * TWO_THIRDS, t0 + dt],
                               dtype=y0.dtype, device=y0.device).unbind()
    k1 = func(stage_times[0], y0)
    k2 = func(stage_times[1], torch.add(y0, k1, alpha=dt * ONE_THIRD))
    k3 = func(stage_times[2], torch.add(y0, k2, alpha=dt).add_(k1, alpha=-dt * ONE_THIRD))
    k4 = func(stage_times[3], torch.add(y0, k1, alpha=dt).add_(k2, alpha=-dt).add_(k3, alpha=dt))
    eighth = dt * 0.125
    return (torch.add(y0, k1, alpha=eighth).add_(k2, alpha=3 * eighth).add_(k3, alpha=3 * eighth)
            .add_(k4, alpha=eighth))


STEPS = {"euler": euler_step, "rk4": rk4_step}


def step_count(start: float, end: float, step_size: float | None) -> float:
    """How many steps :func:`grid` lays from ``start`` to ``end``, counted without laying them:
    a whole number, or inf where the span over the step size overflows a float."""
    if step_size is None:
        return 1
    steps = abs(end - start) / step_size - GRID_SLACK
    return max(1, math.ceil(steps)) if math.isfinite(steps) else math.inf


def grid_steps(times: list[float], step_size: float | None) -> float:
    """How many steps a solve through the monotonic ``times`` takes: the sum of their grids'."""
    return sum(step_count(start, end, step_size) for start, end in zip(times[:-1], times[1:], strict=True))


def grid(start: float, end: float, step_size: float | None) -> list[float]:
    """The times the solver steps through from ``start`` to ``end`` (either direction)."""
    if step_size is None:
        return [start, end]
    steps = int(step_count(start, end, step_size))
    direction = 1.0 if end >= start else -1.0
    return [start + direction * k * step_size for k in range(steps)] + [end]


def fixed_grid_solve(func: Field, y0: torch.Tensor, t: torch.Tensor, method: str,
                     step_size: float | None = None) -> torch.Tensor:
    """Integrate ``dy/dt = func(t, y)`` from ``y0`` at ``t[0]`` by ``method`` (a key of
    :data:`STEPS`); the states at every ``t``, shape ``(len(t), *y0.shape)``.

    ``t`` is strictly monotonic.
    """
    step = STEPS[method]
    times = t.tolist()
    states = [y0]
    y = y0
    for start, end in zip(times[:-1], times[1:], strict=True):
        points = grid(start, end, step_size)
        for t0, t1 in zip(points[:-1], points[1:], strict=True):
            y = step(func, t0, t1 - t0, y)
        states.append(y)
    return torch.stack(states)
