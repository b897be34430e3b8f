"""The forecaster's mixture quantiles: exact to the tolerance, also for multimodal mixtures."""

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from service.model.forecaster import QUANTILE_TOLERANCE, mixture_quantiles


@pytest.mark.parametrize("bimodal", [False, True])
def test_cdf_at_the_quantile_is_the_level(bimodal):
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (40, 1, 2)) + rng.normal(0, 0.5, (40, 32, 2))
    if bimodal:
        means[:, :16] += 9.0
    std = np.array([0.05, 0.7])
    levels = (0.001, 0.05, 0.5, 0.95, 0.999)
    for q, x in zip(levels, mixture_quantiles(means, std, levels), strict=True):
        residual = ndtr((x[:, None, :] - means) / std).mean(axis=1) - q
        assert np.abs(residual).max() <= 2 * QUANTILE_TOLERANCE


def test_a_level_gets_the_same_answer_alone_as_among_others():
    rng = np.random.default_rng(1)
    means = rng.normal(0, 2, (30, 1, 3)) + rng.normal(0, 0.5, (30, 48, 3))
    means[:, :10] -= 6.0
    std = np.array([0.1, 0.5, 2.0])
    levels = [0.02, 0.3, 0.5, 0.97]
    together = mixture_quantiles(means, std, levels)
    for i, q in enumerate(levels):
        np.testing.assert_array_equal(mixture_quantiles(means, std, [q])[0], together[i])


def test_no_levels_no_quantiles():
    assert mixture_quantiles(np.zeros((4, 8, 2)), np.ones(2), []).shape == (0, 4, 2)


def test_one_sample_is_the_normal_quantile():
    means, std = np.array([[[1.5, -2.0]]]), np.array([0.3, 2.0])
    expected = means[0, 0] + std * ndtri(0.9)
    np.testing.assert_allclose(mixture_quantiles(means, std, [0.9])[0, 0], expected, rtol=1e-9)
