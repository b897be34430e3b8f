"""Wall-clock timestamps <-> plain numbers in a chosen time unit.

Models work on plain numbers. A user whose series carry ISO-8601 timestamps gets a time unit
chosen once, at training, so that the typical gap between observations is a number between 1
and about 100 in that unit; the unit is stored with the checkpoint, and the server converts
request timestamps with it (its answers echo the requested times as they were sent).
Times in a unit count from the POSIX epoch (1970-01-01T00:00:00Z).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_datetime(text: str) -> datetime:
    """Parse an ISO-8601 date or date-time; the result is naive when the text names no zone.

    Letters are read in either case (RFC 3339 allows ``2024-03-01t12:00:00z``)."""
    try:
        return datetime.fromisoformat(text.strip().upper())
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"{text!r} is not an ISO-8601 timestamp "
                         "(expected e.g. 2024-03-01T12:00:00Z)") from None


def posix_seconds(moment: datetime) -> float:
    """A date-time as POSIX seconds; one without a zone is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH).total_seconds()


def parse_timestamp(text: str) -> float:
    """ISO-8601 text -> POSIX seconds. A timestamp without a zone is taken as UTC."""
    return posix_seconds(parse_datetime(text))


def choose_unit(times_posix: np.ndarray | Sequence[np.ndarray]) -> str:
    """The largest unit in which the median gap between consecutive times is at least 1.

    Takes the times of one series, or a list with one array per series (gaps are then taken
    within each series only). Gaps of zero are ignored. With no gap at all (single
    observations only) the answer is ``"seconds"``.
    """
    arrays = [times_posix] if isinstance(times_posix, np.ndarray) else list(times_posix)
    gaps = [np.diff(np.sort(np.asarray(a, dtype=np.float64).ravel())) for a in arrays]
    gaps = np.concatenate(gaps) if gaps else np.empty(0)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return "seconds"
    median_gap = float(np.median(gaps))
    fitting = [unit for unit, seconds in UNITS.items() if median_gap >= seconds]
    return max(fitting, key=UNITS.__getitem__, default="seconds")


def _seconds_per(unit: str) -> int:
    try:
        return UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown time unit {unit!r}; expected one of {sorted(UNITS)}") from None


def to_unit(posix_seconds: float | np.ndarray, unit: str) -> float | np.ndarray:
    """POSIX seconds -> time in ``unit`` since the epoch."""
    scale = _seconds_per(unit)
    if isinstance(posix_seconds, np.ndarray):
        return posix_seconds.astype(np.float64) / scale
    return float(posix_seconds) / scale


def from_unit(value: float | np.ndarray, unit: str) -> float | np.ndarray:
    """Time in ``unit`` since the epoch -> POSIX seconds."""
    scale = _seconds_per(unit)
    if isinstance(value, np.ndarray):
        return value.astype(np.float64) * scale
    return float(value) * scale
