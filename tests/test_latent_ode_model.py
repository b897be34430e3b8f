"""The latent-ODE network: batching onto a union grid, backward encoders, the masked ELBO/IWAE."""

import math

import numpy as np
import pytest
import torch

from service.model.batching import Batch, collate
from service.model.latent_ode import LatentODE, LatentODEConfig
from service.model.series import Series
from service.model.solver import SolverConfig, SolverStepLimitError, solve

torch.set_num_threads(1)

FAST = dict(latent_dim=3, encoder_hidden=6, encoder_ode_units=6, dynamics_hidden=6, decoder_hidden=6,
            solver=SolverConfig(method="rk4"), encoder_solver=SolverConfig(method="rk4", step_size=0.5))


def model_for(encoder: str, channels: int = 2, **overrides) -> LatentODE:
    torch.manual_seed(0)
    return LatentODE(LatentODEConfig(num_channels=channels, encoder=encoder, **{**FAST, **overrides}))


def test_collate_shifts_each_series_to_zero_on_the_union_grid():
    a = Series([10.0, 11.0, 13.0], [[1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]], "a")
    b = Series([5.0, 5.5], [[7.0, 8.0], [9.0, np.nan]], "b")
    batch = collate([a, b])
    assert batch.times.tolist() == [0.0, 0.5, 1.0, 3.0]
    assert batch.origins.tolist() == [10.0, 5.0]
    assert batch.mask[0].tolist() == [[True, False], [False, False], [True, True], [False, True]]
    assert batch.mask[1].tolist() == [[True, True], [True, False], [False, False], [False, False]]
    assert batch.values[0, 2].tolist() == [2.0, 3.0]
    assert not torch.isnan(batch.values).any()
    assert batch.observed_rows.tolist() == [[True, False, True, True], [True, True, False, False]]


def test_collate_places_each_series_relative_to_its_given_origin():
    a = Series([10.0, 11.0, 13.0], [[1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]], "a")
    b = Series([5.0, 5.5], [[7.0, 8.0], [9.0, np.nan]], "b")
    batch = collate([a, b], origins=np.array([11.0, 5.0]))
    assert batch.times.tolist() == [-1.0, 0.0, 0.5, 2.0]
    assert batch.origins.tolist() == [11.0, 5.0]
    assert batch.mask[0].tolist() == [[True, False], [True, True], [False, False], [False, True]]


def test_times_before_zero_are_solved_backwards_from_z0():
    model = model_for("rnn", solver=SolverConfig(method="dopri5", rtol=1e-7, atol=1e-9))
    z0 = torch.randn(3, model.config.latent_dim, generator=torch.Generator().manual_seed(1))
    times = torch.tensor([-0.8, -0.3, 0.0, 0.4, 1.0])
    with torch.no_grad():
        path = model.latent_path(z0, times)
        torch.testing.assert_close(path[2:], model.latent_path(z0, times[2:]))   # the forward part as before
        torch.testing.assert_close(path[2], z0)
        backwards = solve(model.dynamics, z0, torch.tensor([0.0, -0.3, -0.8]), model.config.solver)
        torch.testing.assert_close(path[:2], backwards[1:].flip(0))
        # and solving forward again from the earliest state comes back to z0
        again = solve(model.dynamics, path[0], torch.tensor([0.0, 0.8]), model.config.solver)[-1]
        torch.testing.assert_close(again, z0, rtol=1e-4, atol=1e-5)


def test_points_before_the_context_enter_the_loss():
    """A series read from its third point on (a backcast context): its first two points are
    scored, solved backwards, so changing one of them changes the loss."""
    model = model_for("rnn")
    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    values = [[1.0, 0.0], [0.8, 0.3], [0.5, 0.5], [0.2, 0.6], [0.0, 0.7]]
    context = collate([Series(times[2:], values[2:], "s")])
    losses = []
    for first in (values[0], [5.0, -5.0]):
        batch = collate([Series(times, [first, *values[1:]], "s")], origins=context.origins)
        assert batch.times.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
        terms = model(batch, generator=torch.Generator().manual_seed(0), context=context)
        assert terms.num_values == 10
        losses.append(terms.loss.item())
    assert losses[1] > losses[0] + 1


def test_collate_refuses_mismatched_channels_and_inseparable_times():
    with pytest.raises(ValueError, match="channels"):
        collate([Series([0.0], [[1.0, 2.0]], "a"), Series([0.0], [[1.0]], "b")])
    with pytest.raises(ValueError, match="precision"):
        collate([Series([0.0, 1.0, 1.0 + 1e-12], [[1.0], [2.0], [3.0]], "close")])


def test_odernn_encoder_reads_observations_last_to_first():
    model = model_for("odernn", channels=1)
    seen = []
    model.encoder.cell.register_forward_hook(lambda module, args, output: seen.append(args[0][:, 0].tolist()))
    values = [[1.0], [2.0], [3.0], [4.0]]
    model.posterior(collate([Series([0.0, 0.3, 1.1, 2.0], values, "s")]))
    assert [row[0] for row in seen] == [4.0, 3.0, 2.0, 1.0]


def test_rnn_encoder_is_its_gru_cell_stepped_last_to_first():
    """The fused GRU equals the cell fed (masked value, mask, gap to the later observation)."""
    model = model_for("rnn")
    times = [0.0, 0.3, 1.1, 2.0]
    values = [[1.0, np.nan], [2.0, -1.0], [np.nan, 0.5], [4.0, 3.0]]
    other = Series([0.2, 0.9, 1.7], [[0.3, 0.3]] * 3, "other")   # its grid times must be skipped
    with torch.no_grad():
        mean, std = model.posterior(collate([other, Series(times, values, "s")]))
        h = torch.zeros(1, model.config.encoder_hidden)
        later = None
        for t, row in reversed(list(zip(times, values, strict=True))):
            observed = [not math.isnan(v) for v in row]
            x = [0.0 if math.isnan(v) else v for v in row] + [float(o) for o in observed]
            x.append(0.0 if later is None else later - t)
            h = model.encoder.cell(torch.tensor([x]), h)
            later = t
        expected_mean, expected_std = model.encoder.posterior(h)
    torch.testing.assert_close(mean[1:], expected_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(std[1:], expected_std, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["rnn", "odernn"])
def test_encoder_ignores_grid_times_of_other_series(encoder):
    model = model_for(encoder, encoder_solver=SolverConfig(rtol=1e-9, atol=1e-9))
    alone = Series([0.0, 0.4, 1.0], [[1.0, 0.5], [np.nan, -1.0], [2.0, 0.0]], "alone")
    other = Series([0.1, 0.7, 1.3, 2.5], [[0.3, 0.3]] * 4, "other")
    with torch.no_grad():
        mean_alone, std_alone = model.posterior(collate([alone]))
        mean_batch, std_batch = model.posterior(collate([other, alone]))
    torch.testing.assert_close(mean_batch[1], mean_alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std_batch[1], std_alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["rnn", "odernn"])
def test_missing_channel_never_enters_the_loss(encoder):
    model = model_for(encoder)
    batch = collate([Series([0.0, 0.5, 1.0], [[1.0, np.nan], [0.5, 0.2], [np.nan, -0.3]], "s")])
    poisoned = batch.values.clone()
    poisoned[~batch.mask] = 1e6
    results = []
    for values in (batch.values, poisoned):
        model.zero_grad()
        terms = model(Batch(batch.times, values, batch.mask, batch.origins),
                      generator=torch.Generator().manual_seed(3))
        terms.loss.backward()
        results.append((terms.loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert terms.num_values == 4
    assert torch.equal(results[0][0], results[1][0])
    for clean, dirty in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(clean, dirty)


def test_loss_is_the_elbo_per_observed_value():
    model = model_for("rnn")
    batch = collate([Series([0.0, 1.0], [[1.0, 0.0], [0.5, np.nan]], "s")])
    terms = model(batch, kl_coef=0.0, generator=torch.Generator().manual_seed(0))
    assert terms.loss.item() == pytest.approx(terms.nll_per_value, rel=1e-5)
    with_kl = model(batch, kl_coef=1.0, generator=torch.Generator().manual_seed(0))
    assert with_kl.loss.item() == pytest.approx(terms.nll_per_value + with_kl.kl_per_series / 3, rel=1e-5)


def test_importance_weighted_bound_is_tighter_on_average():
    model = model_for("rnn")
    batch = collate([Series(np.linspace(0, 1, 5), np.ones((5, 2)), "s")] * 4)
    torch.manual_seed(1)
    elbo = np.mean([model(batch, num_samples=1).loss.item() for _ in range(30)])
    iwae = np.mean([model(batch, num_samples=16).loss.item() for _ in range(30)])
    assert iwae < elbo
    assert math.isfinite(iwae)


def test_config_round_trip_and_validation():
    config = LatentODEConfig(num_channels=3, encoder="odernn", decoder_hidden=0)
    assert LatentODEConfig.from_dict(config.to_dict()) == config
    assert isinstance(LatentODE(config).decoder[0], torch.nn.Linear) and len(LatentODE(config).decoder) == 1
    with pytest.raises(ValueError, match="encoder"):
        LatentODEConfig(num_channels=1, encoder="lstm")
    with pytest.raises(ValueError, match="unknown model settings"):
        LatentODEConfig.from_dict({"num_channels": 1, "layers": 3})


def test_adjoint_counts_backward_evaluations():
    model = model_for("rnn", solver=SolverConfig(method="dopri5", adjoint=True))
    batch = collate([Series(np.linspace(0, 1, 4), np.ones((4, 2)), "s")])
    model.reset_nfe()
    terms = model(batch)
    forward = model.nfe
    terms.loss.backward()
    assert forward > 0 and model.nfe > forward
    assert all(p.grad is not None for p in model.dynamics.parameters())


def test_step_cap_surfaces_as_solver_error():
    model = model_for("rnn", solver=SolverConfig(method="dopri5", rtol=1e-9, atol=1e-9, max_num_steps=1))
    with pytest.raises(SolverStepLimitError):
        model(collate([Series(np.linspace(0, 5, 4), np.ones((4, 2)), "s")]))


@pytest.mark.parametrize("field", ["latent dynamics", "ODE-RNN hidden dynamics"])
def test_fields_use_their_current_weights_after_loading_and_conversion(field):
    """The fields read their weights from a tuple made at construction: it must follow
    load_state_dict and dtype conversion, as the Sequential they mirror does."""
    model = model_for("odernn")
    func = model.dynamics.func if field == "latent dynamics" else model.encoder.dynamics.func
    size = func.net[0].in_features
    z = torch.randn(4, size)
    torch.testing.assert_close(func(None, z), func.net(z), rtol=0, atol=0)
    torch.manual_seed(1)
    func.load_state_dict({k: torch.randn_like(v) for k, v in func.state_dict().items()})
    torch.testing.assert_close(func(None, z), func.net(z), rtol=0, atol=0)
    func.double()
    assert func(None, z.double()).dtype == torch.float64
    torch.testing.assert_close(func(None, z.double()), func.net(z.double()), rtol=0, atol=0)
