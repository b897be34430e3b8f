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


def _row_rms(tensor: torch.Tensor) -> list[float]:
    """Each problem's RMS norm (torchdiffeq's default norm, over one problem's whole state)."""
    return tensor.pow(2).mean(dim=1).sqrt().tolist()


def _initial_steps(slope_at, y0: torch.Tensor, f0: torch.Tensor, rtol: float, atol: float) -> list[float]:
    """Hairer, Norsett & Wanner, Solving ODEs I, II.4 (torchdiffeq's ``_select_initial_step``),
    for each problem (row) on its own; one field evaluation for all of them."""
    scale = atol + y0.abs() * rtol
    d0s, d1s = _row_rms(y0 / scale), _row_rms(f0 / scale)
    h0s = [1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1 for d0, d1 in zip(d0s, d1s, strict=True)]
    f1 = slope_at(y0 + _column(h0s, y0) * f0)
    steps = []
    for h0, d1, d2 in zip(h0s, d1s, _row_rms((f1 - f0) / scale), strict=True):
        d2 /= h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1 / _ORDER)
        steps.append(min(100 * h0, h1))
    return steps


def _next_step(dt: float, error_ratio: float) -> float:
    if error_ratio == 0:
        return dt * _MAX_GROWTH
    shrink = 1.0 if error_ratio < 1 else _MAX_SHRINK
    return dt * min(_MAX_GROWTH, max(_SAFETY / error_ratio ** (1 / _ORDER), shrink))


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """Per-problem numbers as a (P, 1) tensor that broadcasts over each problem's state."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None]


@dataclass
class _Problem:
    """One problem: where it starts, its requests, its step control, and, as it is solved, its
    accepted steps' interpolants. ``s`` is the forward variable: time from the start times
    ``sign``."""

    index: int
    start: float
    sign: float
    targets: list[float]                 # increasing and > 0, in s
    s: float = 0.0
    dt: float = 0.0
    passed: int = 0                      # how many targets it has reached
    steps_since_target: int = 0
    step_ends: list[float] = field(default_factory=list)
    polynomials: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


@torch.inference_mode()
def dopri5_at(func: nn.Module, y0: torch.Tensor, times: Sequence[torch.Tensor], rtol: float, atol: float,
              max_num_steps: int) -> list[torch.Tensor]:
    """Solve P independent problems together; problem p starts from ``y0[p]`` at ``times[p][0]``.

    ``times[p]`` is strictly monotonic (either direction); the result's entry p holds the states
    at every ``times[p]``: (len(times[p]), *y0.shape[1:]). The field must be autonomous (as the
    latent dynamics are): ``func(None, y)`` is called with the states of the problems still
    being solved, (A, *y0.shape[1:]).

    Each problem has its own step size, error norm and step cap, so its answer is what it would
    be if it were solved alone (to float rounding): neither the other problems nor how far they
    go change its steps. Problems are evaluated together, so a batch costs little more than its
    longest problem; a problem that is done leaves the batch.

    Raises :class:`StepLimitExceeded` (its ``problem`` names the first offender) when
    ``max_num_steps`` steps do not reach a problem's next requested time, its step size
    underflows, or the field's values are not finite.
    """
    states = [y0[p][None].clone() for p in range(y0.shape[0])]
    problems = []
    for p, t in enumerate(times):
        t = t.detach().double().cpu()
        if t.numel() > 1:
            start, sign = t[0].item(), (1.0 if t[1] > t[0] else -1.0)
            problems.append(_Problem(p, start, sign, ((t[1:] - start) * sign).tolist()))
    if problems:
        _solve(func, y0, problems, rtol, atol, max_num_steps)
    for problem in problems:
        out = y0.new_empty(len(problem.targets) + 1, y0[problem.index].numel())
        out[0] = y0[problem.index].reshape(-1)
        _evaluate(problem.polynomials, problem.step_ends, problem.targets, out=out[1:])
        states[problem.index] = out.view(-1, *y0.shape[1:])
    return states


def _solve(func: nn.Module, y0: torch.Tensor, problems: list[_Problem], rtol: float, atol: float,
           max_num_steps: int) -> None:
    """Step every problem to its last target, recording each accepted step's interpolant.

    A step of a small field costs about as much in tensor-operation overhead as in arithmetic,
    so the loop keeps its operations few: the stage buffer holds each slope already multiplied
    by its problem's step size, so that a stage's input is one product over views of that
    buffer (made again only when a problem leaves), and the error and the interpolant need no
    further scaling; the step control is plain Python floats per problem (a handful of problems,
    where each numpy call would cost more than the arithmetic); the field gets no time.
    """
    active = problems
    shape = y0.shape[1:]

    def directions() -> torch.Tensor | None:
        """What a slope is multiplied by to run forwards in s: None when every problem does."""
        return None if all(p.sign > 0 for p in active) else _column([p.sign for p in active], y0)

    direction = directions()

    def slope_at(y: torch.Tensor) -> torch.Tensor:
        """f at states ``y`` (A, width) or flat, as (A, width), run forwards in s."""
        slope = func(None, y.view(-1, *shape)).view(-1, width)
        return slope if direction is None else slope * direction

    def weights(rows) -> torch.Tensor:
        return torch.tensor(rows, dtype=y0.dtype, device=y0.device)

    stage_weights = [weights(beta) for beta in _BETA]
    interpolant_weights = weights(_INTERPOLANT)
    # The error estimate is a small difference of large stage terms: in float32 it is only good
    # to ~1e-3 relative, enough to shift every later step; in float64 the steps follow those of
    # a float64 solve and the answer agrees with it to float32 rounding.
    error_weights = torch.tensor(_ERROR, dtype=torch.float64, device=y0.device)
    y = y0[torch.tensor([p.index for p in active], device=y0.device)].reshape(len(active), -1)
    width = y.shape[1]
    slope = slope_at(y)                                   # at each problem's current state
    for problem, dt in zip(active, _initial_steps(slope_at, y, slope, rtol, atol), strict=True):
        problem.dt = dt
    size_of_y = y.abs()
    while True:
        k = y.new_empty(7, *y.shape)                      # the stages, each times its step size
        flat_k = k.view(7, -1)
        stages_so_far = [flat_k[:stage + 1].t() for stage in range(6)]
        while True:
            for p in active:
                if p.steps_since_target >= max_num_steps:
                    raise StepLimitExceeded(f"max_num_steps exceeded ({p.steps_since_target}>="
                                            f"{max_num_steps})", p.index)
                if not math.isfinite(p.dt) or not p.s + p.dt > p.s:
                    raise StepLimitExceeded(f"underflow in dt {p.dt}", p.index)
            # One problem (the usual request) scales by a plain number: no tensor to make.
            step = active[0].dt if len(active) == 1 else _column([p.dt for p in active], y)
            torch.mul(slope, step, out=k[0])
            y_flat = y.view(-1)
            for stage, (beta, stages) in enumerate(zip(stage_weights, stages_so_far, strict=True)):
                y1 = torch.addmv(y_flat, stages, beta)            # the last stage's: the step's result
                last_slope = slope_at(y1)
                torch.mul(last_slope, step, out=k[stage + 1])
            y1 = y1.view(y.shape)
            size_of_y1 = y1.abs()
            scale = torch.maximum(size_of_y, size_of_y1).double().mul_(rtol).add_(atol)
            error = torch.mv(flat_k.t().double(), error_weights).view(y.shape).div_(scale)
            error_ratios = torch.linalg.vector_norm(error, dim=1).div_(math.sqrt(width)).tolist()
            accepted = [ratio <= 1 for ratio in error_ratios]
            for p, ratio in zip(active, error_ratios, strict=True):
                if math.isnan(ratio):  # torchdiffeq's step size turns NaN and it gives up the same way
                    raise StepLimitExceeded(f"underflow in dt: the field is not finite near "
                                            f"t={p.start + p.sign * p.s:g}", p.index)
            if any(accepted):
                coefficients = torch.mm(interpolant_weights, flat_k).view(4, *y.shape)
                for i, p in enumerate(active):
                    if accepted[i]:
                        p.polynomials.append((y[i], coefficients[:, i]))
                        p.s += p.dt
                        p.step_ends.append(p.s)
                if all(accepted):
                    y, size_of_y, slope = y1, size_of_y1, last_slope
                else:
                    keep = torch.tensor(accepted, device=y.device)[:, None]
                    y = torch.where(keep, y1, y)
                    size_of_y = torch.where(keep, size_of_y1, size_of_y)
                    slope = torch.where(keep, last_slope, slope)
            for p, ratio, ok in zip(active, error_ratios, accepted, strict=True):
                p.steps_since_target += 1
                while ok and p.passed < len(p.targets) and p.targets[p.passed] <= p.s:
                    p.passed += 1
                    p.steps_since_target = 0
                p.dt = _next_step(p.dt, ratio)
            going = [i for i, p in enumerate(active) if p.passed < len(p.targets)]
            if len(going) < len(active):
                break
        if not going:
            return
        index = torch.tensor(going, device=y.device)
        active = [active[i] for i in going]
        y, size_of_y, slope = y[index], size_of_y[index], slope[index]
        direction = directions()


def _evaluate(polynomials: list[tuple[torch.Tensor, torch.Tensor]], step_ends: list[float],
              targets: list[float], out: torch.Tensor) -> None:
    """Every target from the accepted step whose interval (start, end] holds it, into ``out`` (T, N).

    Each target's position x in its step and the powers x..x^4 are computed for all targets at
    once; targets are increasing, so each step's are a contiguous run, written as one ``addmm``
    (y0 plus their powers times the step's coefficients) straight into the output (which can be
    large: a thousand requested times x samples x latent).
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
