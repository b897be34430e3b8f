"""Dormand-Prince 5(4) for inference: many problems at once, each with its own steps.

torchdiffeq's ``odeint`` returns the state at each requested time by stepping in Python to it
and evaluating that step's interpolant, one requested time at a time; with a hundred requested
times and a tiny vector field, that bookkeeping and its generic machinery (perturbation
wrappers, tuple handling, scalar tensors for every step-size decision) cost more than the
field itself. Here the same algorithm takes its steps with numpy for the step control, keeps
each accepted step's interpolating polynomial (one small product of its stages), and at the
end writes the requested times that fall in each step with one matrix product per step.

It solves several **independent problems** together (the forecaster's series, forward and
backward from each series' first observation): they share each field evaluation, but each has
its own step size, error norm and step cap. torchdiffeq solves a batch as one ODE, whose error
norm mixes every series, so a series' steps, and its answer within the tolerance, depended on
the rest of the batch and on how far the batch was solved; here a problem's answer is the one
it gets alone, to float rounding, and a problem that is done leaves the batch.

"The same algorithm" means torchdiffeq 0.2's ``dopri5`` with its defaults, so that a problem's
answer agrees with torchdiffeq's solve of it alone to rounding: the Dormand-Prince-Shampine
tableau and mid-point weights, the Hairer-Norsett-Wanner initial step (two evaluations before
the first step), the RMS error norm over the problem's whole state, the step controller (safety
0.9, growth at most 10x, shrink on a rejected step at most 5x), its fourth-order interpolant,
and its step cap: ``max_num_steps`` attempted steps (accepted or rejected) between two
consecutive requested times. Time runs backwards as in torchdiffeq, by integrating
``-f(-s, y)`` forwards in ``s = -t``.

No gradient flows through it (the forecaster only needs values); training keeps torchdiffeq.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

# Dormand-Prince-Shampine: stage times, stage weights (the last row is the 5th-order solution),
# error weights (5th - 4th order), and the weights of the state at the step's mid-point.
_ALPHA = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_BETA = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_ERROR = (35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
          -2187 / 6784 - -12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60)
_MID = (6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2)


def _interpolant_weights() -> tuple[tuple[float, ...], ...]:
    """Stage weights of the interpolant's x, x^2, x^3, x^4 coefficients, in units of dt.

    torchdiffeq fits y(x) = y0 + d x + c x^2 + b x^3 + a x^4 (x in [0, 1]) through y0, y1, the
    mid-point state and the end slopes f0 = k0, f1 = k6: d = dt f0,
    c = dt (f1 - 4 f0) - 11 y0 - 5 y1 + 16 y_mid, b = dt (5 f0 - 3 f1) + 18 y0 + 14 y1 - 32 y_mid,
    a = 2 dt (f1 - f0) - 8 (y1 + y0) + 16 y_mid. With y1 = y0 + dt sum(_BETA[-1] k) and
    y_mid = y0 + dt sum(_MID k) the y0 terms cancel, so each coefficient is dt times a fixed
    combination of the stages, computed for every step in one matrix product.
    """
    solution, mid = (*_BETA[-1], 0.0), _MID
    f0, f1 = (1.0, *[0.0] * 6), (*[0.0] * 6, 1.0)
    rows = zip(f0, f1, solution, mid, strict=True)
    d, c, b, a = [], [], [], []
    for start, end, y1, y_mid in rows:
        d.append(start)
        c.append(end - 4 * start - 5 * y1 + 16 * y_mid)
        b.append(5 * start - 3 * end + 14 * y1 - 32 * y_mid)
        a.append(2 * (end - start) - 8 * y1 + 16 * y_mid)
    return tuple(d), tuple(c), tuple(b), tuple(a)


_INTERPOLANT = _interpolant_weights()
_ORDER = 5
_SAFETY, _MAX_GROWTH, _MAX_SHRINK = 0.9, 10.0, 0.2


class StepLimitExceeded(RuntimeError):
    """The integration needed more steps than allowed, its step size underflowed, or the field
    returned non-finite values; ``problem`` is the index of the problem that did."""

    def __init__(self, message: str, problem: int):
        super().__init__(message)
        self.problem = problem


def _row_rms(tensor: torch.Tensor) -> np.ndarray:
    """Each problem's RMS norm (torchdiffeq's default norm, over one problem's whole state)."""
    return tensor.pow(2).mean(dim=1).sqrt().double().cpu().numpy()


def _initial_steps(slope_at, y0: torch.Tensor, f0: torch.Tensor, rtol: float, atol: float) -> np.ndarray:
    """Hairer, Norsett & Wanner, Solving ODEs I, II.4 (torchdiffeq's ``_select_initial_step``),
    for each problem (row) on its own; one field evaluation for all of them."""
    scale = atol + y0.abs() * rtol
    d0, d1 = _row_rms(y0 / scale), _row_rms(f0 / scale)
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.maximum(d1, 1e-300))
    f1 = slope_at(h0, y0 + _column(h0, y0) * f0)
    d2 = _row_rms((f1 - f0) / scale) / h0
    largest = np.maximum(d1, d2)
    h1 = np.where(largest <= 1e-15, np.maximum(1e-6, h0 * 1e-3),
                  (0.01 / np.maximum(largest, 1e-300)) ** (1 / _ORDER))
    return np.minimum(100 * h0, h1)


def _next_steps(dt: np.ndarray, error_ratio: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        proposal = _SAFETY / error_ratio ** (1 / _ORDER)
    shrink = np.where(error_ratio < 1, 1.0, _MAX_SHRINK)
    factor = np.where(error_ratio == 0, _MAX_GROWTH, np.minimum(_MAX_GROWTH, np.maximum(proposal, shrink)))
    return dt * factor


def _column(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Per-problem numbers as a (P, 1) tensor that broadcasts over each problem's state."""
    return torch.from_numpy(values).to(like)[:, None]


@dataclass
class _Problem:
    """One problem's requests and, as it is solved, its accepted steps' interpolants."""

    start: float
    sign: float
    targets: np.ndarray                  # increasing and > 0, in the forward variable s
    step_ends: list[float] = field(default_factory=list)
    polynomials: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


@torch.inference_mode()
def dopri5_at(func: nn.Module, y0: torch.Tensor, times: Sequence[torch.Tensor], rtol: float, atol: float,
              max_num_steps: int) -> list[torch.Tensor]:
    """Solve P independent problems together; problem p starts from ``y0[p]`` at ``times[p][0]``.

    ``times[p]`` is strictly monotonic (either direction); the result's entry p holds the states
    at every ``times[p]``: (len(times[p]), *y0.shape[1:]). ``func(t, y)`` is called with the
    problems still being solved: ``t`` their times (A,), in float64, and ``y`` their states
    (A, *y0.shape[1:]).

    Each problem has its own step size, error norm and step cap, so its answer is what it would
    be if it were solved alone (to float rounding): neither the other problems nor how far they
    go change its steps. Problems are evaluated together, so a batch costs little more than its
    longest problem; a problem that is done leaves the batch.

    Raises :class:`StepLimitExceeded` (its ``problem`` names the first offender) when
    ``max_num_steps`` steps do not reach a problem's next requested time, its step size
    underflows, or the field's values are not finite.
    """
    states = [y0[p][None].clone() for p in range(y0.shape[0])]
    problems: dict[int, _Problem] = {}
    for p, t in enumerate(times):
        t = t.detach().double().cpu()
        if t.numel() > 1:
            start, sign = t[0].item(), (1.0 if t[1] > t[0] else -1.0)
            problems[p] = _Problem(start, sign, ((t[1:] - start) * sign).numpy())
    if problems:
        _solve(func, y0, problems, rtol, atol, max_num_steps)
    for p, problem in problems.items():
        out = y0.new_empty(problem.targets.size + 1, y0[p].numel())
        out[0] = y0[p].reshape(-1)
        _evaluate(problem.polynomials, problem.step_ends, problem.targets, out=out[1:])
        states[p] = out.view(-1, *y0.shape[1:])
    return states


def _solve(func: nn.Module, y0: torch.Tensor, problems: dict[int, _Problem], rtol: float, atol: float,
           max_num_steps: int) -> None:
    """Step every problem to its last target, recording each accepted step's interpolant.

    A step of a small field costs about as much in tensor-operation overhead as in arithmetic,
    so the loop keeps its operations few: the step control is numpy over the problems, each
    stage's input is one product over views of the stage buffer (rebuilt only when a problem
    leaves) and one per-problem scaling, and an accepted step keeps its interpolant as one
    small product of its stages.
    """
    ids = np.array(list(problems))
    starts = np.array([problems[p].start for p in ids])
    signs = np.array([problems[p].sign for p in ids])
    ends = np.array([problems[p].targets[-1] for p in ids])
    shape = y0.shape[1:]

    def directions() -> torch.Tensor | None:
        """What a slope is multiplied by to run forwards in s: None when every problem does."""
        return None if (signs > 0).all() else _column(signs, y0)

    direction = directions()

    def slope_at(s: np.ndarray, y: torch.Tensor) -> torch.Tensor:
        slope = func(torch.from_numpy(starts + signs * s), y.view(-1, *shape)).reshape(y.shape)
        return slope if direction is None else slope * direction

    def weights(rows) -> torch.Tensor:
        return torch.tensor(rows, dtype=y0.dtype, device=y0.device)

    stage_weights = [weights(beta) for beta in _BETA]
    interpolant_weights = weights(_INTERPOLANT)
    # The error estimate is a small difference of large stage terms: in float32 it is only good
    # to ~1e-3 relative, enough to shift every later step; in float64 the steps follow those of
    # a float64 solve and the answer agrees with it to float32 rounding.
    error_weights = torch.tensor(_ERROR, dtype=torch.float64, device=y0.device)
    y = y0[torch.from_numpy(ids)].reshape(len(ids), -1)
    width = y.shape[1]
    k = y.new_zeros(7, *y.shape)
    k[0] = slope_at(np.zeros(len(ids)), y)
    dt = _initial_steps(slope_at, y, k[0], rtol, atol)
    s = np.zeros(len(ids))
    steps_since_target = np.zeros(len(ids), dtype=np.int64)
    passed = np.zeros(len(ids), dtype=np.int64)        # how many of its targets each has reached
    size_of_y = y.abs()
    while True:
        flat_k = k.view(7, -1)
        stages_so_far = [flat_k[:stage + 1].t() for stage in range(6)]
        while True:
            over = np.flatnonzero(steps_since_target >= max_num_steps)
            if over.size:
                raise StepLimitExceeded(f"max_num_steps exceeded ({steps_since_target[over[0]]}>="
                                        f"{max_num_steps})", int(ids[over[0]]))
            stuck = np.flatnonzero(~np.isfinite(dt) | ~(s + dt > s))
            if stuck.size:
                raise StepLimitExceeded(f"underflow in dt {dt[stuck[0]]}", int(ids[stuck[0]]))
            dt_column = _column(dt, y)
            for stage, (alpha, beta) in enumerate(zip(_ALPHA, stage_weights, strict=True)):
                combined = torch.mv(stages_so_far[stage], beta).view(y.shape)
                y1 = torch.addcmul(y, dt_column, combined)               # the last is the step's result
                k[stage + 1] = slope_at(s + alpha * dt, y1)
            size_of_y1 = y1.abs()
            scale = torch.maximum(size_of_y, size_of_y1).double().mul_(rtol).add_(atol)
            error = torch.mv(flat_k.t().double(), error_weights).view(y.shape).div_(scale)
            error_ratio = dt * torch.linalg.vector_norm(error, dim=1).numpy() / math.sqrt(width)
            broken = np.flatnonzero(np.isnan(error_ratio))
            if broken.size:  # torchdiffeq's step size turns NaN and it gives up the same way
                i = broken[0]
                raise StepLimitExceeded(f"underflow in dt: the field is not finite near "
                                        f"t={starts[i] + signs[i] * s[i]:g}", int(ids[i]))
            steps_since_target += 1
            accepted = error_ratio <= 1
            if accepted.any():
                coefficients = torch.mm(interpolant_weights, flat_k).view(4, *y.shape).mul_(dt_column)
                for i in np.flatnonzero(accepted):
                    problem = problems[ids[i]]
                    problem.polynomials.append((y[i], coefficients[:, i]))
                    problem.step_ends.append(s[i] + dt[i])
                s = np.where(accepted, s + dt, s)
                keep = torch.from_numpy(accepted)[:, None]
                y = torch.where(keep, y1, y)
                size_of_y = torch.where(keep, size_of_y1, size_of_y)
                k[0] = torch.where(keep, k[6], k[0])
                now_passed = np.array([np.searchsorted(problems[p].targets, s_p, side="right")
                                       for p, s_p in zip(ids, s, strict=True)])
                steps_since_target[now_passed > passed] = 0
                passed = now_passed
            dt = _next_steps(dt, error_ratio)
            done = s >= ends
            if done.any():
                break
        if done.all():
            return
        going = np.flatnonzero(~done)
        index = torch.from_numpy(going)
        ids, starts, signs, ends = ids[going], starts[going], signs[going], ends[going]
        s, dt, steps_since_target, passed = s[going], dt[going], steps_since_target[going], passed[going]
        y, size_of_y, k = y[index], size_of_y[index], k[:, index]
        direction = directions()


def _evaluate(polynomials: list[tuple[torch.Tensor, torch.Tensor]], step_ends: list[float],
              targets: list[float], out: torch.Tensor) -> None:
    """Every target from the accepted step whose interval (start, end] holds it, into ``out`` (T, N).

    Each target's position x in its step and the powers x..x^4 are computed for all targets at
    once; targets are increasing, so each step's are a contiguous run, written as one ``addmm``
    (y0 plus their powers times the step's coefficients) straight into the output (a batch's
    output is large: union grid x samples x series x latent).
    """
    times = torch.tensor(targets, dtype=torch.float64)
    ends = torch.tensor(step_ends, dtype=torch.float64)
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    step = torch.searchsorted(ends, times)                        # first step ending at or after t
    x = (times - starts[step]) / (ends[step] - starts[step])
    powers = (x[:, None] ** torch.arange(1, 5, dtype=torch.float64)).to(out)
    last = torch.searchsorted(times, ends, right=True).tolist()   # targets up to each step's end
    first = 0
    for (start_state, coefficients), stop in zip(polynomials, last, strict=True):
        if stop > first:
            torch.addmm(start_state, powers[first:stop], coefficients, out=out[first:stop])
            first = stop
