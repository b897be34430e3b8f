"""The solver wrapper against dy/dt = y, whose solution is exp(t)."""

import math

import pytest
import torch
from torch import nn

from service.model.solver import CountingFunc, SolverConfig, SolverStepLimitError, solve


class Growth(nn.Module):
    def forward(self, t, y):
        return y


@pytest.mark.parametrize(("method", "step_size", "tolerance"), [
    ("euler", 1e-3, 2e-3),
    ("rk4", 0.05, 1e-6),
    ("dopri5", None, 1e-5),
])
def test_exponential_growth(method, step_size, tolerance):
    config = SolverConfig(method=method, rtol=1e-7, atol=1e-9, step_size=step_size)
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    y = solve(Growth(), torch.ones(1, dtype=torch.float64), t, config)
    expected = torch.exp(t)
    assert torch.allclose(y[:, 0], expected, rtol=tolerance, atol=0)


def test_backwards_in_time():
    t = torch.tensor([0.0, -1.0], dtype=torch.float64)
    y = solve(Growth(), torch.ones(1, dtype=torch.float64), t, SolverConfig(rtol=1e-8, atol=1e-10))
    assert y[-1].item() == pytest.approx(math.exp(-1.0), rel=1e-6)


def test_nfe_is_counted():
    func = CountingFunc(Growth())
    solve(func, torch.ones(1), torch.tensor([0.0, 1.0]), SolverConfig())
    assert func.nfe >= 6  # dopri5 needs at least one full step of six stages


def test_step_cap_raises_clean_error():
    class Stiff(nn.Module):
        def forward(self, t, y):
            return -1e6 * (y - torch.cos(t))

    config = SolverConfig(rtol=1e-9, atol=1e-9, max_num_steps=20)
    with pytest.raises(SolverStepLimitError, match="max_num_steps"):
        solve(Stiff(), torch.ones(1), torch.tensor([0.0, 10.0]), config)


@pytest.mark.parametrize(("method", "adjoint"), [("rk4", False), ("euler", False), ("rk4", True),
                                               ("midpoint", False)])
def test_fixed_grid_longer_than_the_step_cap_is_refused_before_stepping(method, adjoint):
    """max_num_steps bounds fixed-step solves too (ours and torchdiffeq's), counted before the
    grid is laid out: a tiny step_size used to step (and list grid times) without end."""
    func = CountingFunc(Growth())
    config = SolverConfig(method=method, step_size=1e-4, max_num_steps=10_000, adjoint=adjoint)
    with pytest.raises(SolverStepLimitError, match=r"need 2e\+04 steps .*more than max_num_steps=10000"):
        solve(func, torch.ones(1), torch.tensor([0.0, 1.0, 2.0]), config)
    assert func.nfe == 0
    with pytest.raises(SolverStepLimitError, match="would need inf steps"):
        solve(func, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1e300], dtype=torch.float64),
              SolverConfig(method=method, step_size=1e-300, adjoint=adjoint))
    exact = SolverConfig(method=method, step_size=0.25, max_num_steps=8, adjoint=adjoint)
    assert solve(func, torch.ones(1), torch.tensor([0.0, 1.0, 2.0]), exact).shape == (3, 1)
    with pytest.raises(SolverStepLimitError, match="would need 8 steps"):
        solve(func, torch.ones(1), torch.tensor([0.0, 1.0, 2.0]), SolverConfig(**{**exact.to_dict(),
                                                                                 "max_num_steps": 7}))


def test_config_round_trip_and_validation():
    config = SolverConfig(method="rk4", step_size=0.1)
    assert SolverConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown ODE method"):
        SolverConfig(method="magic")
    with pytest.raises(ValueError, match="unknown solver settings"):
        SolverConfig.from_dict({"method": "rk4", "tol": 1})


@pytest.mark.parametrize(("setting", "message"), [
    ({"rtol": float("nan")}, "rtol must be a finite number above 0, got nan"),
    ({"atol": float("inf")}, "atol must be a finite number above 0"),
    ({"atol": 0.0}, "atol must be a finite number above 0"),
    ({"rtol": "1e-3"}, "rtol must be a finite number above 0"),
    ({"method": "rk4", "step_size": float("nan")}, "step_size must be a finite number above 0"),
    ({"max_num_steps": 2**31}, r"max_num_steps must be from 1 to 2147483647, got 2147483648"),
    ({"max_num_steps": 1.5}, "max_num_steps must be a whole number, got 1.5"),
    ({"max_num_steps": True}, "max_num_steps must be a whole number"),
])
def test_settings_a_solve_would_fail_on_are_refused(setting, message):
    """NaN tolerances made every solve give up ("underflow in dt"), and torchdiffeq converts
    max_num_steps to int32: such settings in a checkpoint used to fail only at request time."""
    with pytest.raises(ValueError, match=message):
        SolverConfig(**setting)
    assert SolverConfig(max_num_steps=2**31 - 1).max_num_steps == 2**31 - 1
