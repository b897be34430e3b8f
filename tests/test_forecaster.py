"""The forecaster: posterior predictive in user units, batching invariance, checkpoints, bad input."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from latent_fixtures import sine_series, tiny_config

from service.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from service.model.forecaster import Forecaster, ForecastQuery, numbers_apart
from service.model.series import Series
from service.model.solver import SolverStepLimitError
from training.latent_ode import PLOT_FILE, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for one epoch and saved, with a tight adaptive solver."""
    out = tmp_path_factory.mktemp("run")
    config = tiny_config(epochs=1, method="dopri5", rtol=1e-7, atol=1e-8, encoder="odernn")
    forecaster, metrics = train(config, sine_series(12, 12, seed=0), sine_series(4, 12, seed=1),
                                channels=["a", "b"], time_unit="hours", out=out)
    return out, forecaster


def query(series, at):
    return ForecastQuery(series.times, series.values, np.asarray(at, dtype=float))


def early(series: Series, forecaster: Forecaster) -> Series:
    """The series' observations within half of the longest training series from its first one,
    which leaves room to forecast: sine series of other seeds can be longer than any trained on."""
    kept = series.times <= series.times[0] + 0.5 * forecaster.max_span
    return Series(series.times[kept], series.values[kept], series.id)


def test_checkpoint_round_trip(trained):
    directory, in_memory = trained
    loaded = Forecaster.load(directory)
    assert (directory / PLOT_FILE).stat().st_size > 0
    assert loaded.name == directory.name and Forecaster.load(directory, name="spirals").name == "spirals"
    assert loaded.channels == ["a", "b"] and loaded.time_unit == "hours"
    assert len(loaded.version) == 12 and loaded.max_backcast == pytest.approx(0.5 * loaded.max_span)
    assert set(loaded.metrics) >= {"val_interp_mse", "val_extrap_mse", "epoch"}
    config = json.loads((directory / CONFIG_FILE).read_text())
    assert config["kind"] == "latent_ode" and len(config["data"]["fingerprint"]) == 64
    s = early(sine_series(1, 10, seed=5)[0], loaded)
    q = [query(s, [s.times[0] - 1, s.times[2], s.times[0] + 0.9 * loaded.max_span])]
    a, b = in_memory.predict(q, seed=4), loaded.predict(q, seed=4)
    np.testing.assert_array_equal(a.forecasts[0].mean, b.forecasts[0].mean)


def test_tampered_or_malformed_checkpoint_refused(trained, tmp_path):
    directory, _ = trained
    for name, mutate, message in [
        (WEIGHTS_FILE, lambda data: data[:-1] + bytes([data[-1] ^ 1]), "does not match"),
        (CONFIG_FILE, lambda data: data.replace(b'"latent_dim": 3', b'"latent_dim": 5'), "shape"),
        (CONFIG_FILE, lambda data: data.replace(b'"normalization"', b'"normalisation"'), "normalization"),
        (CONFIG_FILE, lambda data: data.replace(b'"encoder": "odernn"', b'"encoder": "gru"'), "encoder"),
    ]:
        copy = tmp_path / f"copy-{message}"
        copy.mkdir()
        for f in (WEIGHTS_FILE, CONFIG_FILE):
            (copy / f).write_bytes((directory / f).read_bytes())
        (copy / name).write_bytes(mutate((copy / name).read_bytes()))
        with pytest.raises(CheckpointError, match=message):
            Forecaster.load(copy)


def copy_with_config(directory: Path, copy: Path, change) -> Path:
    """A copy of the checkpoint ``directory`` whose config ``change(config)`` alters (the weights,
    and so their hash, stay as they are)."""
    copy.mkdir()
    (copy / WEIGHTS_FILE).write_bytes((directory / WEIGHTS_FILE).read_bytes())
    config = json.loads((directory / CONFIG_FILE).read_text())
    change(config)
    (copy / CONFIG_FILE).write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    (None, "time_unit", "weeks",
     r"time_unit must be null or one of \['days', 'hours', 'minutes', 'seconds'\], got 'weeks'"),
    (None, "time_unit", 5, "time_unit must be null or one of .*, got 5"),
    (None, "max_span", float("inf"), "max_span must be a finite number above 0, got inf"),
    (None, "max_span", float("nan"), "max_span must be a finite number above 0, got nan"),
    (None, "max_span", 10**400, "max_span must be a finite number above 0"),
    (None, "max_backcast", -1.0, r"max_backcast must be a number from 0 to max_span \(.*\), got -1.0"),
    (None, "max_backcast", True, "max_backcast must be a number from 0 to max_span .*, got True"),
    (None, "max_backcast", 1e9, "max_backcast must be a number from 0 to max_span .*, got 1000000000.0"),
    (None, "unseen_channels", "yes", "unseen_channels must be true or false, got 'yes'"),
    (None, "metrics", [1, 2], r"metrics must be a JSON object, got \[1, 2\]"),
    ("normalization", "std", [float("nan"), 1.0], r"normalization.std\[0\] must be a finite number above 0"),
    ("normalization", "std", [1.0, float("inf")], r"normalization.std\[1\] must be a finite number above 0"),
    ("normalization", "mean", [0.0, float("nan")], r"normalization.mean\[1\] must be finite, got nan"),
    ("normalization", "time_scale", float("nan"), "normalization.time_scale must be a finite number above 0"),
    ("model", "latent_dim", 10**30, f"latent_dim must be from 1 to 100000, got {10**30}"),
    ("model", "dynamics_layers", 10**6, "dynamics_layers must be from 1 to 1000, got 1000000"),
    ("model", "latent_dim", 2.5, "latent_dim must be a whole number, got 2.5"),
    ("model", "dynamics_hidden", 100_000,
     r"tensor 'dynamics.func.net.0.bias' has shape \(8,\), the architecture needs \(100000,\)"),
    ("model", "solver", {"method": "dopri5", "rtol": float("nan")}, "solver: rtol must be a finite number"),
])
def test_config_values_that_would_fail_every_request_are_refused_at_load(trained, tmp_path, section, key,
                                                                          value, message):
    """Each of these loaded as ready, and then every request with timestamps (time_unit), or every
    request (a NaN std: 500; a NaN time scale: "times must be strictly increasing") failed; or
    it took minutes and gigabytes to load (10**6 layers; a network far larger than its weights,
    built before their shapes were compared), or failed with a raw overflow or allocator message."""
    directory, _ = trained
    copy = copy_with_config(directory, tmp_path / "copy",
                            lambda config: (config[section] if section else config).update({key: value}))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(copy))}: .*{message}"):
        Forecaster.load(copy)


def test_a_checkpoint_from_before_the_answer_limits_answers_within_half_its_horizon(trained, tmp_path):
    """Such checkpoints hold max_horizon, twice their longest training series, and were never
    trained to backcast or to answer without a channel."""
    directory, _ = trained
    def legacy(config):
        config["max_horizon"] = 2 * config.pop("max_span")
        del config["max_backcast"], config["unseen_channels"]
    copy = copy_with_config(directory, tmp_path / "copy", legacy)
    old, new = Forecaster.load(copy), Forecaster.load(directory)
    assert old.max_span == pytest.approx(new.max_span) and old.max_backcast == 0 and not old.unseen_channels


@pytest.mark.parametrize("dropped", [("max_span",), ("max_backcast", "unseen_channels")])
def test_a_checkpoint_with_some_of_the_answer_limits_is_refused(trained, tmp_path, dropped):
    directory, _ = trained
    copy = copy_with_config(directory, tmp_path / "copy", lambda config: [config.pop(k) for k in dropped])
    with pytest.raises(CheckpointError, match=f"config.json lacks {', '.join(dropped)} "):
        Forecaster.load(copy)


def test_fixed_step_solver_over_its_step_cap_answers_at_once(trained, tmp_path):
    """A checkpoint with rk4 at a tiny step size used to hold the model's lock for ever on one
    request; now the request is refused as soon as its grid is counted, naming the series."""
    directory, _ = trained
    copy = copy_with_config(directory, tmp_path / "copy", lambda config: config["model"]["solver"].update(
        method="rk4", step_size=1e-3, max_num_steps=500))
    forecaster = Forecaster.load(copy)
    s = [early(one, forecaster) for one in sine_series(2, 10, seed=5)]
    near, far = [s[0].times[0] + 0.01], [s[1].times[0] + 0.9 * forecaster.max_span]
    with pytest.raises(SolverStepLimitError, match="more than max_num_steps=500") as raised:
        forecaster.predict([query(s[0], near), query(s[1], far)])
    assert raised.value.query == 1


def test_alone_equals_batched(trained):
    _, forecaster = trained
    series = [early(s, forecaster) for s in sine_series(5, 12, seed=7)]
    target = series[2]
    at = np.array([target.times[-1] + 1.5, target.times[0] - 0.5, target.times[2], target.times[0]])
    alone = forecaster.predict([query(target, at)], quantiles=[0.1, 0.9], seed=3).forecasts[0]
    reach = 0.95 * forecaster.max_span
    others = [query(s, np.linspace(s.times[0] - 1, s.times[0] + reach, 7)) for s in series]
    others[2] = query(target, at)
    batched = forecaster.predict(others, quantiles=[0.1, 0.9], seed=3).forecasts[2]
    # The fixture's ODE-RNN encoder is run on each series alone: on the batch's grid, its Euler
    # steps moved a probe's answer by a fifth of its std.
    np.testing.assert_allclose(batched.mean, alone.mean, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(batched.std, alone.std, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(batched.quantiles[0.9], alone.quantiles[0.9], atol=1e-6, rtol=1e-6)
    assert batched.kind == alone.kind == ["extrapolation", "backcast", "interpolation", "interpolation"]


@pytest.fixture(scope="module")
def bundled():
    """The bundled spirals model: an RNN encoder and dopri5 at rtol 1e-3, where a batch solved as
    one ODE moved a series' answer by up to 1e-2 and a backcast's by 4e-3 with other times."""
    return Forecaster.load(Path(__file__).resolve().parents[1] / "models" / "spirals")


def spiral_times_and_values(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 3, 30))
    return t, np.stack([2 * np.cos(t), 2 * np.sin(t)], axis=1) + rng.normal(0, 0.1, (30, 2))


def test_bundled_model_answers_a_series_alone_as_in_a_batch_to_rounding(bundled):
    times, values = spiral_times_and_values(0)
    near = ForecastQuery(times, values, np.array([-1.0, 0.5, 2.2, 3.0, 5.0]))
    far = ForecastQuery(np.array([0.0, 7.0]), np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([-3.5, 7.5]))
    alone = bundled.predict([near], quantiles=[0.9], seed=7, num_samples=32).forecasts[0]
    batched = bundled.predict([far, near, far], quantiles=[0.9], seed=7, num_samples=32).forecasts[1]
    for got, expected in ((batched.mean, alone.mean), (batched.std, alone.std),
                          (batched.quantiles[0.9], alone.quantiles[0.9])):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)


def test_bundled_models_answer_at_a_time_does_not_depend_on_the_other_times_asked(bundled):
    times, values = spiral_times_and_values(1)
    at = np.array([5.0, 0.5, 3.0, 0.5, 5.0, -1.0, 2.2, 0.0])
    many = bundled.predict([ForecastQuery(times, values, at)], seed=7, num_samples=32).forecasts[0]
    for j in (0, 1, 5):
        one = bundled.predict([ForecastQuery(times, values, at[j:j + 1])], seed=7, num_samples=32)
        np.testing.assert_allclose(one.forecasts[0].mean[0], many.mean[j], rtol=1e-6, atol=1e-6)


def test_deterministic_per_seed_and_order_of_at_kept(trained):
    _, forecaster = trained
    s = early(sine_series(1, 12, seed=9)[0], forecaster)
    at = np.array([s.times[-1] + 1, s.times[2], s.times[-1] + 1, s.times[0] - 2])
    first = forecaster.predict([query(s, at)], seed=11)
    again = forecaster.predict([query(s, at)], seed=11)
    other = forecaster.predict([query(s, at)], seed=12)
    np.testing.assert_array_equal(first.forecasts[0].mean, again.forecasts[0].mean)
    assert not np.array_equal(first.forecasts[0].mean, other.forecasts[0].mean)
    np.testing.assert_array_equal(first.forecasts[0].mean[0], first.forecasts[0].mean[2])
    assert first.nfe > 0 and first.nfe == again.nfe
    reordered = forecaster.predict([query(s, at[::-1])], seed=11).forecasts[0]
    np.testing.assert_allclose(reordered.mean[::-1], first.forecasts[0].mean, atol=1e-5)


def test_predictive_spread_includes_observation_noise(trained):
    _, forecaster = trained
    s = sine_series(1, 12, seed=2)[0]
    prediction = forecaster.predict([query(s, s.times)], quantiles=[0.05, 0.5, 0.95], num_samples=32)
    forecast = prediction.forecasts[0]
    noise = forecaster.normalization.unscale(forecaster.model.obs_std.detach().numpy())
    assert np.all(forecast.std >= noise - 1e-9)
    assert np.all(forecast.quantiles[0.05] < forecast.quantiles[0.5])
    assert np.all(forecast.quantiles[0.5] < forecast.quantiles[0.95])


def test_bad_queries_get_clear_errors(trained):
    _, forecaster = trained
    s = sine_series(1, 8, seed=3)[0]
    good = dict(times=s.times, values=s.values, at=np.array([s.times[-1] + 1]))
    cases = [
        (dict(values=s.values[:, :1]), r"queries\[0\].values: expected shape"),
        (dict(times=s.times[::-1]), "strictly increasing"),
        (dict(times=np.array([])), "non-empty"),
        (dict(values=np.where(np.arange(s.times.size)[:, None] == 1, np.nan, s.values)), "row 1 has no"),
        (dict(at=np.array([np.nan])), "finite"),
        (dict(at=np.array([s.times[0] + 1.01 * forecaster.max_span])), "after the series' first observation"),
        (dict(at=np.array([s.times[0] - 1.01 * forecaster.max_backcast])), "backcasts at most"),
        (dict(times=s.times * 10), "span .* this model reads at most"),
        (dict(values=np.full_like(s.values, np.inf)), "infinite"),
        (dict(values=np.where(np.arange(2) == 0, np.nan, np.nan_to_num(s.values, nan=0.5))),
         "channel 'a' is never observed in this series"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            forecaster.predict([ForecastQuery(**{**good, **change})])
    with pytest.raises(ValueError, match=r"'queries\[0\]' has observations closer in time"):
        too_close = np.array([1.0, 2.0, 2.0 + 1e-9])
        forecaster.predict([ForecastQuery(too_close, np.ones((3, 2)), np.array([3.0]))])
    with pytest.raises(ValueError, match="quantiles"):
        forecaster.predict([ForecastQuery(**good)], quantiles=[1.5])
    assert forecaster.predict([]).forecasts == []


def test_single_observation_query(trained):
    _, forecaster = trained
    single = ForecastQuery(np.array([3.0]), np.array([[0.5, 2.5]]), np.array([2.0, 3.0, 4.5]))
    forecast = forecaster.predict([single], quantiles=[0.5]).forecasts[0]
    assert forecast.kind == ["backcast", "interpolation", "extrapolation"]
    assert forecast.mean.shape == forecast.std.shape == forecast.quantiles[0.5].shape == (3, 2)
    assert np.all(np.isfinite(forecast.mean)) and np.all(forecast.std > 0)


def test_values_far_outside_the_training_data_are_refused(bundled):
    times, values = spiral_times_and_values(2)
    (low_x, low_y), (high_x, high_y) = bundled.value_limits
    assert low_x < -100 and high_y > 100                    # 100 training standard deviations
    inside = values.copy()
    inside[3, 0] = 0.9 * high_x
    bundled.predict([ForecastQuery(times, inside, np.array([4.0]))], num_samples=4)
    outside = values.copy()
    outside[5, 1] = 1.1 * low_y
    with pytest.raises(ValueError, match=r"queries\[0\]\.values\[5\]\[1\].*'y' within"):
        bundled.predict([ForecastQuery(times, outside, np.array([4.0]))], num_samples=4)


def test_a_limit_in_a_message_can_be_sent_back():
    """A refusal shows the limit on the answered side of it: "at most 7.51716" for a limit of
    7.5171575..., sent back as told, was refused again."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        limit = float(rng.choice([-1, 1]) * 10 ** rng.uniform(-8, 12))
        x = limit * (1 + float(rng.choice([-1, 1]) * 10 ** rng.uniform(-15, 1)))
        if x == limit:
            continue
        shown, bound = numbers_apart(x, limit)
        assert shown != bound
        assert float(bound) <= limit if x > limit else float(bound) >= limit, (x, limit, bound)


def test_the_window_a_refusal_allows_is_answered(bundled):
    times, values = np.array([0.0, 9.0]), np.array([[1.0, 0.5], [0.9, 0.4]])
    with pytest.raises(ValueError, match=r"span 9 time units; this model reads at most 7\.51715$") as refused:
        bundled.predict([ForecastQuery(times, values, np.array([9.0]))])
    allowed = float(str(refused.value).rsplit(" ", 1)[1])
    bundled.predict([ForecastQuery(np.array([0.0, allowed]), values, np.array([allowed]))], num_samples=4)
