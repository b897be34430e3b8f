"""The Table 2 spirals: shapes, determinism, irregular per-series sampling, both directions."""

import numpy as np
import pytest

from training.data.spirals import generate_spirals, spiral_curves, split_spirals


@pytest.mark.parametrize("num_observed", [30, 50, 100])
def test_shapes_and_extras(num_observed):
    spirals = generate_spirals(40, num_observed, seed=1)
    assert len(spirals) == 40 and len({s.id for s in spirals}) == 40
    for s in spirals:
        assert s.times.shape == (num_observed,) and s.values.shape == (num_observed, 2)
        assert np.all(np.diff(s.times) > 0) and not np.isnan(s.values).any()
        assert s.extra["future_times"].shape == (100,) and s.extra["future_values"].shape == (100, 2)
        assert s.extra["clean_times"].shape == (500,) and s.extra["clean_values"].shape == (500, 2)
        assert s.extra["future_times"][0] > s.times[-1]


def test_deterministic_per_seed():
    first, again, other = (generate_spirals(20, 30, seed=seed) for seed in (7, 7, 8))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.extra["future_values"], b.extra["future_values"])
    assert not all(np.array_equal(a.values, b.values) for a, b in zip(first, other, strict=True))


def test_sampling_is_irregular_and_differs_between_series():
    spirals = generate_spirals(50, 30, seed=0)
    step = spirals[0].extra["future_times"][1] - spirals[0].extra["future_times"][0]
    for s in spirals:
        steps = s.times / step
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)   # on the window's grid
        assert steps.min() >= -1e-9 and steps.max() <= 99 + 1e-9
        assert len(np.unique(np.round(np.diff(steps)))) > 1               # gaps vary
    assert len({tuple(np.round(s.times / step).astype(int)) for s in spirals}) == 50
    full = generate_spirals(5, 100, seed=0)
    np.testing.assert_allclose(full[0].times, np.arange(100) * step)


def test_noise_free_observations_and_future_lie_on_the_clean_curve():
    for s in generate_spirals(30, 50, noise_std=0.0, seed=3):
        clean_times, clean_values = s.extra["clean_times"], s.extra["clean_values"]
        for times, values in ((s.times, s.values), (s.extra["future_times"], s.extra["future_values"])):
            index = np.searchsorted(clean_times, times - 1e-9)
            np.testing.assert_allclose(clean_times[index], times, atol=1e-9)
            np.testing.assert_array_equal(clean_values[index], values)


def test_noise_has_the_requested_scale():
    noisy = generate_spirals(400, 100, noise_std=0.3, seed=5)
    clean = generate_spirals(400, 100, noise_std=0.0, seed=5)
    residual = np.concatenate([a.values - b.values for a, b in zip(noisy, clean, strict=True)])
    assert residual.std() == pytest.approx(0.3, rel=0.03)
    np.testing.assert_array_equal(noisy[0].times, clean[0].times)


def test_half_clockwise_half_counter_clockwise():
    spirals = generate_spirals(100, 30, noise_std=0.0, seed=2)
    directions = [s.extra["direction"] for s in spirals]
    assert directions.count("cw") == directions.count("ccw") == 50
    assert directions[:50] != ["cw"] * 50 and directions[:50] != ["ccw"] * 50   # shuffled
    _, curves = spiral_curves()
    for s in spirals:
        centre = -5.0 if s.extra["direction"] == "cw" else 5.0
        relative = s.extra["clean_values"] - [centre, 0.0]
        turning = relative[:-1, 0] * relative[1:, 1] - relative[:-1, 1] * relative[1:, 0]
        turning = turning[1:]   # the counter-clockwise curve starts at its centre
        assert np.all(turning < 0) if s.extra["direction"] == "cw" else np.all(turning > 0)
        np.testing.assert_array_equal(s.extra["clean_values"], curves[int(s.extra["direction"] == "ccw")])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_spirals": 0, "num_observed": 30}, "num_spirals"),
    ({"num_spirals": 5, "num_observed": 101}, "num_observed"),
    ({"num_spirals": 5, "num_observed": 0}, "num_observed"),
    ({"num_spirals": 5, "num_observed": 30, "noise_std": -1.0}, "noise_std"),
    ({"num_spirals": 5, "num_observed": 30, "ntotal": 150}, "ntotal"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_spirals(**kwargs)


def test_observed_future_is_drawn_like_the_window_and_lies_on_the_curve():
    for s in generate_spirals(30, 50, noise_std=0.0, seed=4):
        future = s.extra["future_observed"]
        assert future.times.shape == (50,) and future.times[0] > s.times[-1]
        assert future.times[-1] <= s.extra["future_times"][-1] + 1e-9
        index = np.searchsorted(s.extra["clean_times"], future.times - 1e-9)
        np.testing.assert_array_equal(s.extra["clean_values"][index], future.values)


def test_split_gives_histories_through_the_future_for_training_and_windows_for_test():
    spirals = generate_spirals(50, 30, seed=6)
    train, val, test = split_spirals(spirals, 0.2, 0.2, seed=0)
    by_id = {s.id: s for s in spirals}
    for s in [*train, *val]:
        window, future = by_id[s.id], by_id[s.id].extra["future_observed"]
        np.testing.assert_array_equal(s.times, np.concatenate([window.times, future.times]))
        np.testing.assert_array_equal(s.values, np.concatenate([window.values, future.values]))
        assert "future_values" not in s.extra        # what was its future is now observed
    for s in test:
        assert s is by_id[s.id] and "future_values" in s.extra
    assert len(train) == 30 and len(val) == 10 and len(test) == 10
