"""ISO-8601 parsing, unit choice and conversion."""

import numpy as np
import pytest

from service.model.timeunits import (
    UNITS,
    choose_unit,
    from_unit,
    parse_timestamp,
    to_unit,
)


def test_parse_zoned_and_naive_timestamps():
    assert parse_timestamp("1970-01-01T00:00:00Z") == 0.0
    assert parse_timestamp("2024-03-01T12:00:00Z") == 1709294400.0
    assert parse_timestamp("2024-03-01T12:00:00") == 1709294400.0          # naive means UTC
    assert parse_timestamp("2024-03-01T13:30:00+01:30") == 1709294400.0
    assert parse_timestamp("2024-03-01") == 1709251200.0


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "2024-02-30T00:00", "12.5"])
def test_parse_rejects_non_timestamps(text):
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp"):
        parse_timestamp(text)


@pytest.mark.parametrize(("gap", "unit"), [(0.01, "seconds"), (30, "seconds"), (90, "minutes"),
                                           (59 * 60, "minutes"), (2 * 3600, "hours"),
                                           (86400, "days"), (30 * 86400, "days")])
def test_choose_unit_puts_median_gap_between_one_and_a_hundred(gap, unit):
    times = 1.7e9 + gap * np.arange(20.0)
    assert choose_unit(times) == unit
    assert choose_unit(times[::-1]) == unit


def test_choose_unit_uses_gaps_within_series_only():
    # Two hourly series a year apart: the jump between them must not count as a gap.
    hourly = 1.7e9 + 3600 * np.arange(10.0)
    assert choose_unit([hourly, hourly + 365 * 86400]) == "hours"
    assert choose_unit([np.array([1.7e9]), np.array([1.8e9])]) == "seconds"


def test_unit_conversion_round_trip():
    seconds = np.array([0.0, 1709294400.0, -86400.0])
    for unit, scale in UNITS.items():
        np.testing.assert_allclose(to_unit(seconds, unit), seconds / scale)
        np.testing.assert_allclose(from_unit(to_unit(seconds, unit), unit), seconds)
        assert to_unit(7200.0, unit) == 7200.0 / scale
    with pytest.raises(ValueError, match="unknown time unit 'weeks'"):
        to_unit(1.0, "weeks")
