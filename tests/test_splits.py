"""Series-level splits: disjoint, complete, deterministic, non-empty when possible."""

import numpy as np
import pytest

from service.model.series import Series
from training.data.splits import split_by_series


def make(count):
    return [Series(np.arange(3.0), np.zeros((3, 1)), id=f"s{i}") for i in range(count)]


def ids(split):
    return [s.id for s in split]


def test_disjoint_complete_and_sized():
    series = make(100)
    train, val, test = split_by_series(series, 0.1, 0.2, seed=0)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    everything = ids(train) + ids(val) + ids(test)
    assert sorted(everything) == sorted(ids(series)) and len(set(everything)) == 100
    order = ids(series)
    for split in (train, val, test):
        assert [order.index(i) for i in ids(split)] == sorted(order.index(i) for i in ids(split))


def test_deterministic_and_seed_dependent():
    series = make(50)
    first = [ids(split) for split in split_by_series(series, 0.2, 0.2, seed=3)]
    again = [ids(split) for split in split_by_series(series, 0.2, 0.2, seed=3)]
    other = [ids(split) for split in split_by_series(series, 0.2, 0.2, seed=4)]
    assert first == again and first != other


@pytest.mark.parametrize(("count", "sizes"), [(3, (1, 1, 1)), (2, (1, 1, 0)), (1, (1, 0, 0)),
                                              (0, (0, 0, 0)), (5, (3, 1, 1))])
def test_small_inputs_keep_every_split_non_empty_when_possible(count, sizes):
    train, val, test = split_by_series(make(count), 0.01, 0.01, seed=0)
    assert (len(train), len(val), len(test)) == sizes


def test_zero_fraction_gives_empty_split():
    train, val, test = split_by_series(make(10), 0.0, 0.3, seed=0)
    assert (len(train), len(val), len(test)) == (7, 0, 3)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (1.0, 0.0), (0.5, 0.5)])
def test_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction"):
        split_by_series(make(10), val, test, seed=0)
