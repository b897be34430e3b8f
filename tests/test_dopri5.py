"""The inference Dormand-Prince against torchdiffeq's dopri5, which it must reproduce."""

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from service.model.dopri5 import StartCache
from service.model.solver import CountingFunc, SolverConfig, SolverStepLimitError, solve_for_inference

torch.set_num_threads(1)  # tiny float64 matmuls are ~100x slower on two threads of a busy machine


def random_field(dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 20), nn.ELU(), nn.Linear(20, 4)).to(dtype)


class Autonomous(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)


def requested_times(sign: float, dtype: torch.dtype, count: int = 100) -> torch.Tensor:
    later = torch.sort(torch.rand(count, generator=torch.Generator().manual_seed(1)) * 5).values
    return sign * torch.cat([torch.zeros(1), later]).to(dtype)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_float64_matches_torchdiffeq_and_its_nfe(sign):
    field = CountingFunc(Autonomous(random_field(torch.float64)))
    y0 = torch.randn(64, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = requested_times(sign, torch.float64)
    config = SolverConfig(rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        expected = odeint(field, y0, t, rtol=config.rtol, atol=config.atol, method="dopri5")
    expected_nfe, field.nfe = field.nfe, 0
    got = solve_for_inference(field, y0, t, config)
    assert got.shape == (101, 64, 3, 4)
    assert field.nfe == expected_nfe
    assert torch.allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_float32_is_within_tolerance_of_a_float64_solve(sign):
    net = random_field(torch.float32)
    y0 = torch.randn(64, 3, 4, generator=torch.Generator().manual_seed(3))
    t = requested_times(sign, torch.float32)
    config = SolverConfig(rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        reference = odeint(Autonomous(net).double(), y0.double(), t.double(), rtol=1e-3, atol=1e-4)
    net.float()
    got = solve_for_inference(Autonomous(net), y0, t, config).double()
    scale = config.atol + config.rtol * reference.abs()
    # The solver's own error norm (RMS over the state), at every requested time, in tolerances.
    assert ((got - reference) / scale).pow(2).flatten(1).mean(1).sqrt().max() < 0.1


def test_a_single_time_is_the_initial_state():
    y0 = torch.randn(5, 4)
    got = solve_for_inference(Autonomous(random_field(torch.float32)), y0, torch.zeros(1), SolverConfig())
    assert torch.equal(got, y0[None])


class Stiff(nn.Module):
    def forward(self, t, y):
        return -1e6 * (y - torch.cos(t))


def test_step_cap_raises_the_solver_error():
    config = SolverConfig(rtol=1e-9, atol=1e-9, max_num_steps=20)
    with pytest.raises(SolverStepLimitError, match="max_num_steps"):
        solve_for_inference(Stiff(), torch.ones(1), torch.tensor([0.0, 10.0]), config)


def test_a_non_finite_field_ends_in_the_solver_error_where_torchdiffeq_gives_up():
    class Broken(nn.Module):
        def forward(self, t, y):
            return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    field, t = CountingFunc(Broken()), torch.tensor([0.0, 2.0])
    with pytest.raises(AssertionError, match="underflow in dt"):
        odeint(field, torch.ones(3), t, rtol=1e-3, atol=1e-4)
    torchdiffeq_nfe, field.nfe = field.nfe, 0
    with pytest.raises(SolverStepLimitError, match="not finite"):
        solve_for_inference(field, torch.ones(3), t, SolverConfig())
    assert field.nfe == torchdiffeq_nfe


@pytest.mark.parametrize("cap", [3, 40])
def test_step_cap_counts_steps_between_requested_times_as_torchdiffeq_does(cap):
    """A dense request succeeds with a cap that a single far request exceeds (cap 3), in both."""
    field = Autonomous(random_field(torch.float64, seed=4))
    y0 = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 3
    config = SolverConfig(rtol=1e-7, atol=1e-8, max_num_steps=cap)
    for t in (torch.linspace(0, 4, 21, dtype=torch.float64), torch.tensor([0.0, 4.0], dtype=torch.float64)):
        try:
            with torch.no_grad():
                odeint(field, y0, t, rtol=config.rtol, atol=config.atol, options={"max_num_steps": cap})
            torchdiffeq_finished = True
        except AssertionError:
            torchdiffeq_finished = False
        try:
            solve_for_inference(field, y0, t, config)
            finished = True
        except SolverStepLimitError:
            finished = False
        assert finished == torchdiffeq_finished


def test_other_methods_go_through_solve_without_gradients():
    net = random_field(torch.float32)
    y0 = torch.randn(5, 4, requires_grad=True)
    config = SolverConfig(method="rk4", step_size=0.1)
    got = solve_for_inference(Autonomous(net), y0, torch.tensor([0.0, 1.0]), config)
    assert not got.requires_grad


def test_a_backward_solve_from_the_forward_solves_start_is_cheaper_and_as_accurate():
    field = CountingFunc(Autonomous(random_field(torch.float64, seed=6)))
    y0 = torch.randn(64, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    forward_t = requested_times(1.0, torch.float64)
    backward_t = requested_times(-1.0, torch.float64, count=20)
    config = SolverConfig(rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        reference = odeint(field, y0, backward_t, rtol=1e-10, atol=1e-12)

    def backward(cache: StartCache | None, start: torch.Tensor) -> tuple[torch.Tensor, int]:
        field.nfe = 0
        states = solve_for_inference(field, start, backward_t, config, cache)
        return states, field.nfe

    fresh, fresh_nfe = backward(None, y0)
    cache = StartCache()
    solve_for_inference(field, y0, forward_t, config, cache)
    reused, reused_nfe = backward(cache, y0)
    assert reused_nfe <= fresh_nfe - 2  # at least the slope and the initial-step trial
    scale = config.atol + config.rtol * reference.abs()
    # Global error in tolerances, in the solver's own norm (RMS over the state), at the worst time.
    fresh_error, reused_error = (((got - reference) / scale).pow(2).flatten(1).mean(1).sqrt().max().item()
                                 for got in (fresh, reused))
    assert fresh_error < 2 and reused_error < 1.5 * fresh_error
    _, other_nfe = backward(cache, y0.clone())  # another state (even an equal one) starts afresh
    assert other_nfe == fresh_nfe
