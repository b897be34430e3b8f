"""The GRU baseline: padding and masks do not leak; free running feeds back its own output."""

import numpy as np
import pytest
import torch

from benchmarks.rnn_baseline import GRUBaseline, forecast_loss, free_run, train_gru
from service.model.series import Series
from training.data.spirals import generate_spirals
from training.latent_ode_config import TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def make_series(seed, n, channels=2):
    rng = np.random.default_rng(seed)
    return Series(np.cumsum(rng.uniform(0.1, 1.0, n)), rng.normal(size=(n, channels)), id=f"s{seed}")


def test_a_series_alone_equals_the_same_series_in_a_padded_batch():
    torch.manual_seed(0)
    model = GRUBaseline(2, hidden_size=8).eval()
    short, long = make_series(0, 4), make_series(1, 9)
    futures = [short.times[-1] + np.array([0.5, 0.7, 1.5]), long.times[-1] + np.array([0.2, 0.9])]
    together = free_run(model, [short, long], futures)
    for s, f, batched in zip([short, long], futures, together, strict=True):
        np.testing.assert_allclose(free_run(model, [s], [f])[0], batched, atol=1e-6)
        assert batched.shape == (f.size, 2)


def test_extrapolation_feeds_back_its_own_predictions():
    torch.manual_seed(1)
    model = GRUBaseline(1, hidden_size=6).eval()
    s = make_series(2, 5, channels=1)
    future = s.times[-1] + np.array([0.3, 0.8, 1.0])
    predicted = free_run(model, [s], [future])[0]
    # Re-run by hand: observations with gaps to the next time, then the model's own outputs.
    times = np.concatenate([s.times, future])
    inputs = np.concatenate([s.values, predicted[:-1]])
    steps = np.concatenate([inputs, np.ones_like(inputs), np.diff(times)[:, None]], axis=1)
    with torch.no_grad():
        outputs, _ = model(torch.tensor(steps[None], dtype=torch.float32))
    np.testing.assert_allclose(outputs[0, -3:].numpy(), predicted, atol=1e-6)


def test_loss_skips_padding_and_missing_values():
    torch.manual_seed(2)
    model = GRUBaseline(2, hidden_size=5)
    a, b = make_series(3, 3), make_series(4, 7)
    b.values[2, 1] = np.nan
    counts = [2 * 2, 6 * 2 - 1]
    for context in ([3, 7], [2, 4]):
        together = forecast_loss(model, [a, b], context).item()
        separate = [forecast_loss(model, [s], [k]).item() for s, k in zip((a, b), context, strict=True)]
        assert together == pytest.approx(np.dot(separate, counts) / sum(counts), rel=1e-5)


def test_loss_after_the_context_is_the_free_running_forecast():
    torch.manual_seed(3)
    model = GRUBaseline(2, hidden_size=5)
    s = make_series(6, 8)
    # Points 1 and 2 are predicted from the true points before them, 3..7 free-running.
    free = free_run(model, [Series(s.times[:3], s.values[:3])], [s.times[3:]])[0]
    inputs = GRUBaseline.step_inputs(torch.tensor(s.values[None, :2], dtype=torch.float32),
                                     torch.ones(1, 2, 2, dtype=torch.bool),
                                     torch.tensor(np.diff(s.times[:3])[None], dtype=torch.float32))
    with torch.no_grad():
        teacher = model(inputs)[0][0].numpy()
    squared = np.concatenate([(teacher - s.values[1:3]).ravel(), (free - s.values[3:]).ravel()]) ** 2
    expected = squared.mean()
    assert forecast_loss(model, [s], [3]).item() == pytest.approx(expected, rel=1e-5)


def test_future_must_lie_after_the_last_observation():
    s = make_series(5, 4)
    with pytest.raises(ValueError, match="after the last observation"):
        free_run(GRUBaseline(2), [s], [np.array([s.times[-1]])])


@pytest.mark.parametrize(("min_context_fraction", "ema_decay"), [(1.0, 0.0), (0.5, 0.0), (0.5, 0.5)])
def test_training_improves_on_spirals_and_keeps_the_best_epoch(min_context_fraction, ema_decay):
    spirals = generate_spirals(40, 30, seed=0)
    train, val = spirals[:32], spirals[32:]
    config = TrainConfig(epochs=3, batch_size=16, min_context_fraction=min_context_fraction,
                         ema_decay=ema_decay)
    forecaster, best = train_gru(config, train, val)
    assert 1 <= best["epoch"] <= 3 and best["step"] == 2 * best["epoch"]
    futures = [s.extra["future_times"] for s in val]
    predicted = forecaster.extrapolate(val, futures)
    assert all(p.shape == (100, 2) and np.isfinite(p).all() for p in predicted)
    frozen = TrainConfig(epochs=1, batch_size=16, lr=1e-9, lr_min=1e-9)
    _, untrained = train_gru(frozen, train, val)
    assert best["val_extrap_mse"] < untrained["val_extrap_mse"]
