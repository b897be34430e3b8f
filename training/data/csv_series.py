"""Load the user's own series from a long-format CSV file, checking every cell.

Format: a header ``series_id,time,<channel>,<channel>,...`` (at least one channel), then one
row per observation. Rows may come in any order; each series is sorted by time. An empty
channel cell is a missing value; a row must observe at least one channel, and every channel
must be observed somewhere in the file.

``time`` is either a plain number in every row (the user's own unit; ``time_unit`` is None),
or an ISO-8601 timestamp in every row. Timestamps are converted to POSIX seconds (a timestamp
without a zone counts as UTC), a unit is chosen so the median gap within series is between 1
and about 100 (:func:`service.model.timeunits.choose_unit`), and times are stored in that unit
since the epoch. Timestamps with and without a zone may not be mixed: a naive time next to
zoned ones is ambiguous. A file whose times are all (or 90 % of them) whole numbers that are
dates written YYYYMMDD (20240131) or months written YYYYMM (202401) is refused: read as numbers,
20240131 to 20240201 would be a gap of 70, but such files are exports of dates; ``2024-01-31``
reads them as dates, and ``20240131.0`` as the plain numbers they would otherwise be taken for.

A series id is read without the whitespace around it, but two spellings of one id (``b`` and
`` b``) are refused, naming both lines: they are as likely two series as one.

A series with a single observation is accepted: it is valid data (it gives the encoder an
initial state and the normaliser a value), and a trainer that needs more points per series
can drop it. Two rows of one series at the same instant are rejected, naming both lines.

Every fault raises :class:`CsvFormatError` naming the 1-based line of the file (the header is
line 1) and the column. ``fingerprint`` is the SHA-256 of the file's bytes, recorded with the
checkpoint so a model can be traced to its data.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.model.series import Series
from service.model.timeunits import choose_unit, parse_datetime, posix_seconds, to_unit

REQUIRED_COLUMNS = ("series_id", "time")
# The key of each series' ``extra`` that holds the file line of each of its rows, for messages
# about data that only a later check (a split, a normalisation) finds wrong.
LINES = "csv_lines"

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class CsvFormatError(ValueError):
    """The file breaks the format; the message names the line and the column."""


@dataclass
class CsvDataset:
    series: list[Series]
    channels: list[str]
    time_unit: str | None
    fingerprint: str


@dataclass
class _Row:
    line: int
    time: float
    values: list[float]


def _fault(line: int, column: str | None, problem: str) -> CsvFormatError:
    where = f"line {line}" if column is None else f"line {line}, column {column}"
    return CsvFormatError(f"{where}: {problem}")


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line of the row, cells), skipping blank lines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _fault(line, None, f"malformed CSV ({exc})") from None
        if any(cell.strip() for cell in cells):
            yield line, cells


def _check_header(line: int, cells: list[str]) -> list[str]:
    names = [cell.strip() for cell in cells]
    for position, expected in enumerate(REQUIRED_COLUMNS):
        found = names[position] if position < len(names) else None
        if found != expected:
            separator = next((f"; the columns look separated by {name}, but they must be by commas"
                              for sign, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"))
                              if found and sign in found), "")
            raise _fault(line, f"{position + 1}", f"expected header {expected!r}, found {found!r}; "
                         f"the header must read series_id,time,<channel>,...{separator}")
    if len(names) == len(REQUIRED_COLUMNS):
        raise _fault(line, None, "no channel columns after 'time'; at least one is needed")
    for position, name in enumerate(names):
        if not name:
            raise _fault(line, f"{position + 1}", "a column has no name")
        first = names.index(name)
        if first != position:
            raise _fault(line, f"{name!r}", f"column {position + 1} repeats the name of column {first + 1}")
    return names[len(REQUIRED_COLUMNS):]


# How other tools write a missing value (R, pandas, Excel exports); here a missing value is an
# empty cell, and these get a message that says so.
MISSING_MARKERS = {"na", "n/a", "nan", "null", "none", "-", "?"}


def _parse_value(text: str, line: int, column: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    if _NUMBER.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
        raise _fault(line, repr(column), f"{text!r} overflows a 64-bit float")
    try:
        finite = math.isfinite(float(text))
    except ValueError:
        finite = True  # not a number at all
    empty_instead = "leave the cell empty for a missing value"
    if not finite:
        raise _fault(line, repr(column), f"non-finite value {text!r}; {empty_instead}")
    if text.lower() in MISSING_MARKERS:
        raise _fault(line, repr(column), f"{text!r} is not a number; {empty_instead}")
    raise _fault(line, repr(column), f"{text!r} is not a number")


# Dates written without separators, as exports often do: YYYYMMDD (20240131) and YYYYMM (202401).
# Read as numbers they are wrong across month and year ends (20240131 to 20240201: a gap of 70).
_COMPACT_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})?")
# Years such a time is taken for a date in: those of any data a user has, while numeric times
# (seconds, steps, epoch seconds of 1970-1973) hardly all fall on valid dates in them.
COMPACT_DATE_YEARS = range(1800, 2200)
# A file is taken for one of dates when this share of its times are: a typo (20240132) or one
# series timed otherwise does not make the rest numbers.
COMPACT_DATE_SHARE = 0.9


def _compact_date_form(text: str) -> str | None:
    """"YYYYMMDD" or "YYYYMM" when ``text`` is a valid date or month written so, else None."""
    match = _COMPACT_DATE.fullmatch(text)
    if match is None or int(match[1]) not in COMPACT_DATE_YEARS:
        return None
    try:
        datetime.date(int(match[1]), int(match[2]), int(match[3] or 1))
    except ValueError:
        return None
    return "YYYYMMDD" if match[3] else "YYYYMM"


_KIND_NAMES = {"number": "a plain number", "zoned": "a timestamp with a time zone",
               "naive": "a timestamp without a time zone"}


class _TimeParser:
    """Parses the time column, insisting that every row uses the same kind of time."""

    def __init__(self) -> None:
        self.kind: str | None = None   # "number", "zoned" or "naive"
        self.first_line = 0
        self.numbers = 0
        self.compact_dates: dict[str, int] = {}  # form -> how many times are written so
        self.first_compact_date: dict[str, tuple[int, str]] = {}  # form -> (line, text)
        self.first_other_number: tuple[int, str] | None = None

    def __call__(self, text: str, line: int) -> float:
        text = text.strip()
        if not text:
            raise _fault(line, "'time'", "empty time")
        if _NUMBER.fullmatch(text):
            kind, seconds = "number", float(text)
            if not math.isfinite(seconds):
                raise _fault(line, "'time'", f"{text!r} overflows a 64-bit float")
            self.numbers += 1
            form = _compact_date_form(text)
            if form is None:
                self.first_other_number = self.first_other_number or (line, text)
            else:
                self.compact_dates[form] = self.compact_dates.get(form, 0) + 1
                self.first_compact_date.setdefault(form, (line, text))
        else:
            try:
                moment = parse_datetime(text)
            except ValueError:
                raise _fault(line, "'time'", f"{text!r} is neither a number nor an ISO-8601 "
                             "timestamp (e.g. 2024-03-01T12:00:00Z)") from None
            kind = "naive" if moment.tzinfo is None else "zoned"
            seconds = posix_seconds(moment)
        if self.kind is None:
            self.kind, self.first_line = kind, line
        elif kind != self.kind:
            raise _fault(line, "'time'", f"{text!r} is {_KIND_NAMES[kind]}, but line "
                         f"{self.first_line} has {_KIND_NAMES[self.kind]}; use one kind throughout")
        return seconds

    def check_not_all_compact_dates(self) -> None:
        """Refuse a file whose times are (nearly) all dates written YYYYMMDD or YYYYMM (see the
        module docstring)."""
        count = sum(self.compact_dates.values())
        if self.kind != "number" or not count or count < COMPACT_DATE_SHARE * self.numbers:
            return
        form = max(self.compact_dates, key=self.compact_dates.__getitem__)
        line, text = self.first_compact_date[form]
        iso = f"{text[:4]}-{text[4:6]}-{text[6:] or '01'}"
        share = "every other time" if count == self.numbers else f"{count} of the {self.numbers} times"
        odd = ""
        if self.first_other_number is not None:
            odd_line, odd_text = self.first_other_number
            odd = f"; line {odd_line}'s {odd_text!r} is not one (a typo?)"
        gap = "20240131 to 20240201: a gap of 70" if form == "YYYYMMDD" else "202412 to 202501: a gap of 89"
        raise _fault(line, "'time'", f"{text!r} and {share} look like dates written {form}, which would be "
                     f"read as plain numbers ({gap}){odd}; write them as ISO dates ({iso}) to have them read "
                     f"as dates, or with a decimal point ({text}.0) to have them read as numbers")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _fault(line, None, f"not UTF-8 text (byte {exc.start})") from None


def _build_series(series_id: str, rows: list[_Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = sorted(rows, key=lambda row: row.time)
    for earlier, later in zip(rows, rows[1:], strict=False):
        if earlier.time == later.time:
            first, second = sorted((earlier.line, later.line))
            raise _fault(second, "'time'", f"series {series_id!r} has two observations at the "
                         f"same time (lines {first} and {second})")
    times = np.array([row.time for row in rows], dtype=np.float64)
    values = np.array([row.values for row in rows], dtype=np.float64)
    return times, values, np.array([row.line for row in rows])


def load_csv(path: str | Path) -> CsvDataset:
    """Read and validate a long-format CSV file of series (see the module docstring); every
    fault is a :class:`CsvFormatError` that names the file, the line and the column."""
    try:
        return _load_csv(Path(path))
    except CsvFormatError as exc:
        raise CsvFormatError(f"{path}: {exc}") from None


def _load_csv(path: Path) -> CsvDataset:
    data = path.read_bytes()
    rows = _rows(_decode(data))
    header = next(rows, None)
    if header is None:
        raise _fault(1, None, "the file is empty; expected a header series_id,time,<channel>,...")
    channels = _check_header(*header)
    width = len(REQUIRED_COLUMNS) + len(channels)
    parse_time = _TimeParser()
    by_series: dict[str, list[_Row]] = {}
    spellings: dict[str, tuple[str, int]] = {}  # each id's cell as first written, and its line
    for line, cells in rows:
        if len(cells) != width:
            raise _fault(line, None, f"{len(cells)} cells, but the header has {width} columns")
        series_id = cells[0].strip()
        if not series_id:
            raise _fault(line, "'series_id'", "empty series id; every row must name its series")
        invisible = next((ch for ch in series_id if unicodedata.category(ch) == "Cf"), None)
        if invisible is not None:  # 'b' and 'b\u200b' look alike and would be two series
            raise _fault(line, "'series_id'", f"series id {series_id!r} holds an invisible character "
                         f"(U+{ord(invisible):04X}); remove it, or another id that looks the same is "
                         "another series")
        first_spelling, first_line = spellings.setdefault(series_id, (cells[0], line))
        if cells[0] != first_spelling:
            raise _fault(line, "'series_id'", f"series id {cells[0]!r} differs from {first_spelling!r} (line "
                         f"{first_line}) only by the whitespace around it, so they would be read as one "
                         "series; write one series' id the same way on every row, or give two series "
                         "distinct ids")
        time = parse_time(cells[1], line)
        values = [_parse_value(text, line, name) for text, name in zip(cells[2:], channels, strict=True)]
        if all(math.isnan(value) for value in values):
            names = ", ".join(repr(name) for name in channels)
            raise _fault(line, names, "every channel is empty; a row must observe at least one")
        by_series.setdefault(series_id, []).append(_Row(line, time, values))
    if not by_series:
        raise _fault(header[0] + 1, None, "the file has a header but no observations")
    parse_time.check_not_all_compact_dates()

    built = {series_id: _build_series(series_id, rows) for series_id, rows in by_series.items()}
    observed = np.zeros(len(channels), dtype=bool)
    for _, values, _ in built.values():
        observed |= ~np.isnan(values).all(axis=0)
    if not observed.all():
        missing = channels[int(np.argmin(observed))]
        raise _fault(header[0], repr(missing), "no row observes this channel")

    time_unit = None
    if parse_time.kind != "number":
        time_unit = choose_unit([times for times, _, _ in built.values()])
    series = [Series(times if time_unit is None else to_unit(times, time_unit), values, id=series_id,
                     extra={LINES: lines}) for series_id, (times, values, lines) in built.items()]
    return CsvDataset(series, channels, time_unit, hashlib.sha256(data).hexdigest())
