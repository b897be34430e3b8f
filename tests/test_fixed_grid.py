"""Our fixed-grid euler and rk4 against torchdiffeq's, which they must reproduce (values, gradients)."""

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from service.model.fixed_grid import grid
from service.model.solver import CountingFunc, SolverConfig, solve


class TimeDependent(nn.Module):
    """A field that uses t, so that a wrong stage time shows."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1))


def both(method: str, t: list[float], step_size: float | None):
    """(ours, torchdiffeq's) states and gradients for the same solve, and both NFE."""
    results = []
    for ours in (True, False):
        field = CountingFunc(TimeDependent().double())
        y0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                         requires_grad=True)
        times = torch.tensor(t, dtype=torch.float64)
        if ours:
            states = solve(field, y0, times, SolverConfig(method=method, step_size=step_size))
        else:
            options = {} if step_size is None else {"step_size": step_size}
            states = odeint(field, y0, times, method=method, options=options)
        states.square().sum().backward()
        results.append((states.detach(), y0.grad, field.func.net[0].weight.grad, field.nfe))
    return results


@pytest.mark.parametrize("method", ["euler", "rk4"])
@pytest.mark.parametrize(("t", "step_size"), [
    ([0.0, 0.0378], 0.05),          # one short step (the ODE-RNN's typical interval)
    ([0.4, 0.1], 0.05),             # backwards, several steps and a short last one
    ([0.0, 0.3], 0.1),              # a whole number of steps: no zero-length extra step
    ([0.0, -0.25, -0.5, -1.2], None),  # backwards, one step between requested times
    ([1.0, 1.7], None),
])
def test_matches_torchdiffeq(method, t, step_size):
    ours, theirs = both(method, t, step_size)
    (ours, ours_dy0, ours_dw, ours_nfe), (theirs, theirs_dy0, theirs_dw, theirs_nfe) = ours, theirs
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    assert torch.allclose(ours_dy0, theirs_dy0, rtol=0, atol=1e-10)
    assert torch.allclose(ours_dw, theirs_dw, rtol=0, atol=1e-10)
    assert ours_nfe <= theirs_nfe  # torchdiffeq may add a zero-length step on a whole number of steps


def test_grid_ends_on_the_target_in_either_direction():
    assert grid(0.0, 0.12, 0.05) == pytest.approx([0.0, 0.05, 0.1, 0.12])
    assert grid(0.3, 0.0, 0.1) == pytest.approx([0.3, 0.2, 0.1, 0.0])
    assert len(grid(0.0, 0.3, 0.1)) == 4   # 0.3 / 0.1 is 2.9999999999999996 in floats
    assert grid(0.0, 0.01, 0.05) == [0.0, 0.01]
    assert grid(2.0, 1.0, None) == [2.0, 1.0]


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("rk4", 4)])
def test_order_on_exponential_growth(method, order):
    class Growth(nn.Module):
        def forward(self, t, y):
            return y

    errors = []
    for step_size in (0.1, 0.05):
        y = solve(Growth(), torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
                  SolverConfig(method=method, step_size=step_size))
        errors.append(abs(y[-1].item() - torch.e))
    assert 0.8 * 2 ** order < errors[0] / errors[1] < 1.25 * 2 ** order  # halving the step: error / 2^order
