"""The inference Dormand-Prince against torchdiffeq's dopri5, which it must reproduce for each
problem alone, and its problems solved together against each solved alone."""

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

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
    got, = solve_for_inference(field, y0[None], [t], config)
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
    got = solve_for_inference(Autonomous(net), y0[None], [t], config)[0].double()
    scale = config.atol + config.rtol * reference.abs()
    # The solver's own error norm (RMS over the state), at every requested time, in tolerances.
    assert ((got - reference) / scale).pow(2).flatten(1).mean(1).sqrt().max() < 0.1


def test_a_single_time_is_the_initial_state():
    y0 = torch.randn(5, 4)
    field = Autonomous(random_field(torch.float32))
    got = solve_for_inference(field, y0[None], [torch.zeros(1)], SolverConfig())
    assert len(got) == 1 and torch.equal(got[0], y0[None])


class Stiff(nn.Module):  # autonomous, as the inference solver requires
    def forward(self, t, y):
        return -1e6 * (y - 1.0)


def test_step_cap_raises_the_solver_error():
    config = SolverConfig(rtol=1e-9, atol=1e-9, max_num_steps=20)
    with pytest.raises(SolverStepLimitError, match="max_num_steps"):
        solve_for_inference(Stiff(), torch.zeros(1, 1), [torch.tensor([0.0, 10.0])], config)


def test_a_non_finite_field_ends_in_the_solver_error_where_torchdiffeq_gives_up():
    class Broken(nn.Module):  # y = exp(-t) until y < 0.6, near t = 0.51
        def forward(self, t, y):
            return torch.where(y < 0.6, torch.full_like(y, float("nan")), -y)

    field, t = CountingFunc(Broken()), torch.tensor([0.0, 2.0])
    with pytest.raises(AssertionError, match="underflow in dt"):
        odeint(field, torch.ones(3), t, rtol=1e-3, atol=1e-4)
    torchdiffeq_nfe, field.nfe = field.nfe, 0
    with pytest.raises(SolverStepLimitError, match="not finite"):
        solve_for_inference(field, torch.ones(1, 3), [t], SolverConfig())
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
            solve_for_inference(field, y0[None], [t], config)
            finished = True
        except SolverStepLimitError:
            finished = False
        assert finished == torchdiffeq_finished


def test_other_methods_go_through_solve_without_gradients():
    net = random_field(torch.float32)
    y0 = torch.randn(5, 4, requires_grad=True)
    config = SolverConfig(method="rk4", step_size=0.1)
    got = solve_for_inference(Autonomous(net), y0[None], [torch.tensor([0.0, 1.0])], config)
    assert not got[0].requires_grad


def problems(count: int = 6) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """States of different sizes, forward and backward, to times of different reach."""
    generator = torch.Generator().manual_seed(8)
    y0 = torch.randn(count, 16, 4, dtype=torch.float64, generator=generator)
    y0 *= torch.logspace(-2, 1, count, dtype=torch.float64)[:, None, None]
    times = []
    for p in range(count):
        reach = 0.3 + 5 * torch.rand(1, generator=generator, dtype=torch.float64)
        later = torch.sort(torch.rand(10 + 7 * p, generator=generator, dtype=torch.float64)).values * reach
        times.append((1.0 if p % 2 else -1.0) * torch.cat([torch.zeros(1, dtype=torch.float64), later]))
    return y0, times


def test_problems_solved_together_get_the_answers_they_get_alone():
    field = Autonomous(random_field(torch.float64, seed=6))
    y0, times = problems()
    config = SolverConfig(rtol=1e-3, atol=1e-4)
    together = solve_for_inference(field, y0, times, config)
    for p, t in enumerate(times):
        alone, = solve_for_inference(field, y0[p:p + 1], [t], config)
        assert together[p].shape == (len(t), 16, 4)
        assert torch.allclose(together[p], alone, rtol=0, atol=1e-12)
        with torch.no_grad():
            expected = odeint(field, y0[p], t, rtol=config.rtol, atol=config.atol, method="dopri5")
        assert torch.allclose(together[p], expected, rtol=0, atol=1e-9)


def test_a_problems_answer_does_not_depend_on_its_other_requested_times():
    field = Autonomous(random_field(torch.float64, seed=6))
    y0, times = problems(count=2)
    config = SolverConfig(rtol=1e-3, atol=1e-4)
    few = [t[:5] for t in times]
    from_few = solve_for_inference(field, y0, few, config)
    from_all = solve_for_inference(field, y0, times, config)
    for p in range(2):
        assert torch.allclose(from_all[p][:5], from_few[p], rtol=0, atol=1e-12)


def test_the_step_limit_error_names_the_problem_that_hit_it():
    class CubicDecay(nn.Module):  # stiff where |y| is large: only the third problem's start
        def forward(self, t, y):
            return -100.0 * y ** 3

    y0 = torch.tensor([[0.1], [0.2], [30.0], [0.3]], dtype=torch.float64)
    times = [torch.tensor([0.0, 1.0], dtype=torch.float64)] * 4
    config = SolverConfig(rtol=1e-5, atol=1e-7, max_num_steps=25)
    for p in (0, 1, 3):
        solve_for_inference(CubicDecay(), y0[p:p + 1], times[:1], config)
    with pytest.raises(SolverStepLimitError, match="max_num_steps") as raised:
        solve_for_inference(CubicDecay(), y0, times, config)
    assert raised.value.problem == 2
