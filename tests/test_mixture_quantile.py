"""The forecaster's mixture quantiles: exact to the tolerance, for multimodal mixtures and in the tails."""

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr, ndtri

from service.model.mixture_quantile import QUANTILE_FLOAT32_MIN, QUANTILE_RTOL, mixture_quantiles


def tail_mass(x: np.ndarray, means: np.ndarray, std: np.ndarray, q: float) -> np.ndarray:
    """The mixture's CDF at x for q <= 1/2, its survival function for q > 1/2 (each accurate in
    its tail), over the samples axis of ``means``."""
    z = (x[:, None, :] - means) / std
    return ndtr(z).mean(axis=1) if q <= 0.5 else ndtr(-z).mean(axis=1)


@pytest.mark.parametrize("bimodal", [False, True])
def test_cdf_at_the_quantile_is_the_level(bimodal):
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (40, 1, 2)) + rng.normal(0, 0.5, (40, 32, 2))
    if bimodal:
        means[:, :16] += 9.0
    std = np.array([0.05, 0.7])
    levels = (1e-9, 1e-6, 0.001, 0.05, 0.5, 0.95, 0.999, 1 - 1e-7)
    for q, x in zip(levels, mixture_quantiles(means, std, levels), strict=True):
        tail = min(q, 1 - q)
        # Within QUANTILE_RTOL of the level relatively, or QUANTILE_RTOL stds of the root, which in
        # a tail (where the CDF's relative slope is about |z|) is |z| QUANTILE_RTOL relatively.
        allowed = 2 * QUANTILE_RTOL * (1 + abs(ndtri(tail)))
        assert np.abs(tail_mass(x, means, std, q) / tail - 1).max() <= allowed, q


def exact_quantile(means: np.ndarray, std: float, q: float) -> float:
    """The mixture's quantile by bracketing root-finding on the log of its CDF or survival function."""
    sign, tail = (1, q) if q <= 0.5 else (-1, 1 - q)
    def gap(x: float) -> float:
        return np.logaddexp.reduce(log_ndtr(sign * (x - means) / std)) - np.log(means.size) - np.log(tail)
    return brentq(gap, -sign * 1e3, sign * 1e3, xtol=1e-13, rtol=1e-14)


@pytest.mark.parametrize("q", [1e-300, 1e-30, 1e-9, 1e-7, 1e-6, 1e-3, 0.3, 0.5, 0.9, 1 - 1e-7, 1 - 1e-12])
def test_tail_levels_match_an_exact_root(q):
    """Before, levels below 1e-6 stopped at once (the CDF was within 1e-6 of them anywhere in the
    tail) and levels within 1e-7 of 1 were beyond the float32 CDF: a two-bump mixture's 1e-6
    quantile came back as -7.07 instead of -4.61; the bracket held nothing below 10 stds."""
    rng = np.random.default_rng(3)
    for means in (np.array([0.0, 3.0]), rng.normal(0, 0.5, 64)):
        got = mixture_quantiles(means[None, :, None], np.array([1.0]), [q])[0, 0, 0]
        assert got == pytest.approx(exact_quantile(means, 1.0, q), abs=1e-4), means.size


def test_a_level_gets_the_same_answer_alone_as_among_others():
    rng = np.random.default_rng(1)
    means = rng.normal(0, 2, (30, 1, 3)) + rng.normal(0, 0.5, (30, 48, 3))
    means[:, :10] -= 6.0
    std = np.array([0.1, 0.5, 2.0])
    levels = [QUANTILE_FLOAT32_MIN / 10, 0.02, 0.3, 0.5, 0.97]   # the first is solved in float64
    together = mixture_quantiles(means, std, levels)
    for i, q in enumerate(levels):
        np.testing.assert_array_equal(mixture_quantiles(means, std, [q])[0], together[i])


def test_no_levels_no_quantiles():
    assert mixture_quantiles(np.zeros((4, 8, 2)), np.ones(2), []).shape == (0, 4, 2)


def test_one_sample_is_the_normal_quantile():
    means, std = np.array([[[1.5, -2.0]]]), np.array([0.3, 2.0])
    for q in (1e-12, 0.1, 0.9, 1 - 1e-12):
        expected = means[0, 0] + std * ndtri(q)
        np.testing.assert_allclose(mixture_quantiles(means, std, [q])[0, 0], expected, rtol=1e-6)


def test_matches_the_quantile_of_draws_from_the_mixture():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(1, 5, 1)) * 3
    draws = means[0, rng.integers(0, 5, 400_000), 0] + rng.normal(size=400_000) * 0.7
    quantile = mixture_quantiles(means, np.array([0.7]), [0.2])[0, 0, 0]
    assert quantile == pytest.approx(np.quantile(draws, 0.2), abs=0.02)
