"""Train / validation / test split by whole series.

Splitting by series (never by time points within a series) keeps every test series unseen in
training, which is what a forecast for a new client's series faces. The split is a seeded
permutation, so the same series in the same order and the same seed give the same split.
"""

from __future__ import annotations

import numpy as np

from service.model.series import Series


def _split_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Sizes of (val, test): rounded fractions, at least one each when asked for and possible.

    Training keeps at least one series; when series are short, validation is served before test.
    """
    val = round(val_fraction * count)
    test = round(test_fraction * count)
    if val_fraction > 0:
        val = max(val, 1)
    if test_fraction > 0:
        test = max(test, 1)
    val = min(val, max(count - 1, 0))
    test = min(test, max(count - 1 - val, 0))
    return val, test


def split_by_series(series: list[Series], val_fraction: float, test_fraction: float,
                    seed: int) -> tuple[list[Series], list[Series], list[Series]]:
    """Split into (train, val, test); each keeps the input order of its series."""
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got "
                         f"{val_fraction} + {test_fraction}")
    val_size, test_size = _split_sizes(len(series), val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(len(series))
    val_index = np.sort(order[:val_size])
    test_index = np.sort(order[val_size:val_size + test_size])
    train_index = np.sort(order[val_size + test_size:])
    return ([series[i] for i in train_index], [series[i] for i in val_index],
            [series[i] for i in test_index])


def check_split(train: list[Series], val: list[Series], test: list[Series], val_fraction: float) -> None:
    """A run needs a training and a validation series; the error says what the data hold and how
    to get both."""
    if train and val:
        return
    total = len(train) + len(val) + len(test)
    if total < 2:
        fix = "a run needs 2 series or more (each series_id is one series): add series"
    elif not val and val_fraction == 0:
        fix = "--val-fraction is 0: raise it so that some series validate"
    else:
        fix = "split them so that both groups get one"
    raise ValueError(f"need at least one training and one validation series; the data hold {total} series "
                     f"({len(train)} training, {len(val)} validation, {len(test)} test): {fix}")
