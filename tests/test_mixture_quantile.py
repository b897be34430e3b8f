"""The forecaster's mixture quantiles: exact to the tolerance, also for multimodal mixtures."""

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from service.model.forecaster import QUANTILE_TOLERANCE, mixture_quantile


@pytest.mark.parametrize("bimodal", [False, True])
def test_cdf_at_the_quantile_is_the_level(bimodal):
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (40, 1, 2)) + rng.normal(0, 0.5, (40, 32, 2))
    if bimodal:
        means[:, :16] += 9.0
    std = np.array([0.05, 0.7])
    for q in (0.001, 0.05, 0.5, 0.95, 0.999):
        x = mixture_quantile(means, std, q)
        residual = ndtr((x[:, None, :] - means) / std).mean(axis=1) - q
        assert np.abs(residual).max() <= 2 * QUANTILE_TOLERANCE


def test_one_sample_is_the_normal_quantile():
    means, std = np.array([[[1.5, -2.0]]]), np.array([0.3, 2.0])
    expected = means[0, 0] + std * ndtri(0.9)
    np.testing.assert_allclose(mixture_quantile(means, std, 0.9)[0], expected, rtol=1e-9)
