"""Dormand-Prince 5(4) for inference: torchdiffeq's steps, one vectorised dense output at the end.

torchdiffeq's ``odeint`` returns the state at each requested time by stepping in Python to it
and evaluating that step's interpolant, one requested time at a time; with a hundred requested
times and a tiny vector field, that bookkeeping and its generic machinery (perturbation
wrappers, tuple handling, scalar tensors for every step-size decision) cost more than the
field itself. Here the same algorithm takes its steps with plain floats for the step control,
keeps each accepted step's interpolating polynomial (one small product of its stages), and at
the end writes the requested times that fall in each step with one matrix product per step.

"The same algorithm" means torchdiffeq 0.2's ``dopri5`` with its defaults, so that answers
agree with it to rounding: the Dormand-Prince-Shampine tableau and mid-point weights, the
Hairer-Norsett-Wanner initial step (two evaluations before the first step), the RMS error norm
over the whole state, the step controller (safety 0.9, growth at most 10x, shrink on a rejected
step at most 5x), its fourth-order interpolant, and its step cap: ``max_num_steps`` attempted
steps (accepted or rejected) between two consecutive requested times. Time runs backwards as
in torchdiffeq, by integrating ``-f(-s, y)`` forwards in ``s = -t``. The one departure is
opt-in: a second solve from the same state handed a :class:`StartCache` starts from the first
one's slope and step-size proposal instead of the initial-step heuristic (answers within the
tolerance, not to rounding).

No gradient flows through it (the forecaster only needs values); training keeps torchdiffeq.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass
class SolveStart:
    """Where a solve began: the state ``y0`` (that very tensor), its time, ``func``'s value
    there (flattened), and the step size that the controller proposed after the first
    accepted step."""

    y0: torch.Tensor
    t0: float
    slope: torch.Tensor
    step: float


@dataclass
class StartCache:
    """Lets a second solve from the same state skip the first one's start-up.

    The forecaster solves forward from z0 to the forecast times and then backward from the same
    z0 to the backcast times. Each solve would spend two evaluations of the field on its start:
    the slope at z0 and the trial step of the Hairer-Norsett-Wanner initial step, whose guess
    is cautious (on the bundled spirals model the first step's error is far below tolerance and
    the next step is 5-6 times longer). Handed the same cache, the second solve takes the slope
    (negated) and, as its first step, the size that the controller proposed after the first
    solve's first step: an estimate from the measured local error at the same state, which to
    leading order does not depend on the direction. If it does not suit, the step is rejected
    and shrunk as any step is. Reused only for the same ``y0`` tensor at the same time.
    """

    start: SolveStart | None = None


class StepLimitExceeded(RuntimeError):
    """The integration needed more steps than allowed, its step size underflowed, or the field
    returned non-finite values."""


def _rms(tensor: torch.Tensor) -> float:
    return tensor.pow(2).mean().sqrt().item()


def _initial_step(field, y0: torch.Tensor, f0: torch.Tensor, rtol: float, atol: float) -> float:
    """Hairer, Norsett & Wanner, Solving ODEs I, II.4 (as torchdiffeq's ``_select_initial_step``)."""
    scale = atol + y0.abs() * rtol
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = field(h0, y0 + h0 * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1 / _ORDER)
    return min(100 * h0, h1)


def _next_step(dt: float, error_ratio: float) -> float:
    if error_ratio == 0:
        return dt * _MAX_GROWTH
    shrink = 1.0 if error_ratio < 1 else _MAX_SHRINK
    return dt * min(_MAX_GROWTH, max(_SAFETY / error_ratio ** (1 / _ORDER), shrink))


@torch.inference_mode()
def dopri5_at(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, rtol: float, atol: float,
              max_num_steps: int, cache: StartCache | None = None) -> torch.Tensor:
    """The states at every ``t`` (strictly monotonic, starting where ``y0`` is): (len(t), *y0.shape).

    With ``cache`` (see :class:`StartCache`), a solve from the cached start reuses it, and any
    other solve records its own start there.

    Raises :class:`StepLimitExceeded` when ``max_num_steps`` steps do not reach the next
    requested time, the step size underflows, or the field's values are not finite.

    A step of a small field costs about as much in tensor-operation overhead as in arithmetic,
    so the loop keeps its operations few: each stage's input is one ``addmv`` over views of the
    stage buffer made once, the time handed to ``func`` is one 0-d tensor updated in place, and
    an accepted step keeps its interpolant as one small product of its stages.
    """
    times = t.detach().double().cpu()
    if times.numel() == 1:
        return y0[None].clone()
    start, sign = times[0].item(), (1.0 if times[1] > times[0] else -1.0)
    targets = ((times[1:] - start) * sign).tolist()  # increasing, > 0, in the forward variable s
    t_now = torch.zeros((), dtype=y0.dtype, device=y0.device)

    def field(s: float, y: torch.Tensor) -> torch.Tensor:
        t_now.fill_(start + sign * s)
        slope = func(t_now, y.view(y0.shape)).reshape(-1)
        return slope if sign > 0 else -slope

    def weights(rows) -> torch.Tensor:
        return torch.tensor(rows, dtype=y0.dtype, device=y0.device)

    stage_weights = [weights(beta) for beta in _BETA]
    interpolant_weights = weights(_INTERPOLANT)
    # The error estimate is a small difference of large stage terms: in float32 it is only good
    # to ~1e-3 relative, enough to shift every later step; in float64 the steps follow those of
    # a float64 solve and the answer agrees with it to float32 rounding.
    error_weights = torch.tensor(_ERROR, dtype=torch.float64, device=y0.device)
    y = y0.reshape(-1)
    k = y.new_zeros(7, y.numel())
    stages_so_far = [k[:stage + 1].t() for stage in range(6)]        # (N, stage + 1) views of k
    known = cache.start if cache is not None else None
    recording = None
    if known is not None and known.y0 is y0 and known.t0 == start:
        torch.mul(known.slope, sign, out=k[0])
        dt = known.step
    else:
        k[0] = field(0.0, y)
        dt = _initial_step(field, y, k[0], rtol, atol)
        if cache is not None:
            recording = cache.start = SolveStart(y0, start, k[0] * sign, dt)
    root_size = math.sqrt(y.numel())
    s, end, next_target, steps_since_target = 0.0, targets[-1], 0, 0
    step_ends: list[float] = []
    polynomials: list[tuple[torch.Tensor, torch.Tensor]] = []     # y0 (N,), x..x^4 coefficients (4, N)
    size_of_y = y.abs()
    while s < end:
        if steps_since_target >= max_num_steps:
            raise StepLimitExceeded(f"max_num_steps exceeded ({steps_since_target}>={max_num_steps})")
        if not math.isfinite(dt) or not s + dt > s:
            raise StepLimitExceeded(f"underflow in dt {dt}")
        for stage, (alpha, beta) in enumerate(zip(_ALPHA, stage_weights, strict=True)):
            y1 = torch.addmv(y, stages_so_far[stage], beta, alpha=dt)  # the last is the step's result
            k[stage + 1] = field(s + alpha * dt, y1)
        size_of_y1 = y1.abs()
        scale = torch.maximum(size_of_y, size_of_y1).double().mul_(rtol).add_(atol)
        error = torch.mv(k.t().double(), error_weights).div_(scale)
        error_ratio = dt * torch.linalg.vector_norm(error).item() / root_size
        if math.isnan(error_ratio):  # torchdiffeq's step size turns NaN and it gives up the same way
            raise StepLimitExceeded(f"underflow in dt: the field is not finite near t={start + sign * s:g}")
        steps_since_target += 1
        if error_ratio <= 1:
            polynomials.append((y, torch.mm(interpolant_weights, k).mul_(dt)))
            s, y, size_of_y = s + dt, y1, size_of_y1
            step_ends.append(s)
            k[0] = k[6]
            while next_target < len(targets) and targets[next_target] <= s:
                next_target += 1
                steps_since_target = 0
        dt = _next_step(dt, error_ratio)
        if recording is not None and step_ends:
            recording.step, recording = dt, None
    states = y.new_empty(len(targets) + 1, y.numel())
    states[0] = y0.reshape(-1)
    _evaluate(polynomials, step_ends, targets, out=states[1:])
    return states.view(-1, *y0.shape)


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
