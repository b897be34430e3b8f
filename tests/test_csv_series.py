"""Long-format CSV loading: good files load exactly; every fault names its line and column."""

import hashlib

import numpy as np
import pytest

from service.model.timeunits import parse_timestamp
from training.data.csv_series import CsvFormatError, load_csv


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_numeric_times_missing_cells_multiple_series_unsorted(tmp_path):
    path = write(tmp_path, "series_id,time,temp,load\n"
                           "b,2.5,1.0,\n"
                           "a,3,4,5\n"
                           "a,1, -2e-1 ,7\n"
                           "\n"
                           "b,0.5,,8\n"
                           "a,2,,6\n")
    data = load_csv(path)
    assert data.channels == ["temp", "load"]
    assert data.time_unit is None
    assert data.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [s.id for s in data.series] == ["b", "a"]
    b, a = data.series
    np.testing.assert_array_equal(a.times, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(a.values, [[-0.2, 7.0], [np.nan, 6.0], [4.0, 5.0]])
    np.testing.assert_array_equal(b.times, [0.5, 2.5])
    np.testing.assert_array_equal(b.values, [[np.nan, 8.0], [1.0, np.nan]])


def test_iso_timestamps_choose_a_unit_and_round_trip(tmp_path):
    path = write(tmp_path, "series_id,time,x\n"
                           "s,2024-03-01T02:00:00Z,3\n"
                           "s,2024-03-01T00:00:00Z,1\n"
                           "s,2024-03-01T01:00:00Z,2\n"
                           "t,2024-03-01T05:30:00+01:00,9\n")
    data = load_csv(path)
    assert data.time_unit == "hours"
    s, t = data.series
    expected = parse_timestamp("2024-03-01T00:00:00Z") / 3600 + np.arange(3)
    np.testing.assert_allclose(s.times, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(s.values[:, 0], [1, 2, 3])
    assert t.times[0] * 3600 == parse_timestamp("2024-03-01T04:30:00Z")


def test_naive_timestamps_are_utc(tmp_path):
    data = load_csv(write(tmp_path, "series_id,time,x\ns,2024-03-01 00:00,1\ns,2024-03-02 00:00,2\n"))
    assert data.time_unit == "days"
    assert data.series[0].times[0] * 86400 == parse_timestamp("2024-03-01T00:00:00Z")


def test_single_observation_series_is_allowed(tmp_path):
    data = load_csv(write(tmp_path, "series_id,time,x\nlonely,4,1\n"))
    assert len(data.series) == 1 and data.series[0].times.tolist() == [4.0]


def fault(tmp_path, text):
    """The error's message after the file's path, which every message starts with."""
    path = write(tmp_path, text)
    with pytest.raises(CsvFormatError) as info:
        load_csv(path)
    prefix = f"{path}: "
    assert str(info.value).startswith(prefix)
    return str(info.value)[len(prefix):]


def test_bad_time_names_row_and_column(tmp_path):
    message = fault(tmp_path, "series_id,time,x\ns,1,2\ns,noon,3\n")
    assert message.startswith("line 3, column 'time':") and "'noon'" in message


def test_mixing_numbers_and_timestamps_is_refused(tmp_path):
    message = fault(tmp_path, "series_id,time,x\ns,1,2\ns,2024-03-01,3\n")
    assert message.startswith("line 3, column 'time':") and "line 2" in message


def test_mixing_zoned_and_naive_timestamps_is_refused(tmp_path):
    message = fault(tmp_path, "series_id,time,x\ns,2024-03-01T00:00Z,2\ns,2024-03-02T00:00,3\n")
    assert message.startswith("line 3, column 'time':") and "time zone" in message


def test_empty_time_and_non_finite_time(tmp_path):
    assert fault(tmp_path, "series_id,time,x\ns,,2\n").startswith("line 2, column 'time': empty")
    assert fault(tmp_path, "series_id,time,x\ns,nan,2\n").startswith("line 2, column 'time':")
    assert fault(tmp_path, "series_id,time,x\ns,1e999,2\n").startswith("line 2, column 'time':")


def test_unknown_series_names_row_and_column(tmp_path):
    message = fault(tmp_path, "series_id,time,x\ns,1,2\n  ,2,3\n")
    assert message.startswith("line 3, column 'series_id':")


@pytest.mark.parametrize("cell", ["abc", "1,5", "0x10", "--1"])
def test_non_numeric_value_names_row_and_column(tmp_path, cell):
    message = fault(tmp_path, f'series_id,time,x,y\ns,1,2,3\ns,2,4,"{cell}"\n')
    assert message.startswith("line 3, column 'y':") and "not a number" in message


@pytest.mark.parametrize("cell", ["nan", "inf", "-Infinity", "1e400"])
def test_non_finite_value_names_row_and_column(tmp_path, cell):
    message = fault(tmp_path, f"series_id,time,x,y\ns,1,{cell},3\n")
    assert message.startswith("line 2, column 'x':")


def test_duplicate_time_in_a_series_names_both_rows(tmp_path):
    message = fault(tmp_path, "series_id,time,x\ns,1,1\nt,1,1\ns,2,2\ns,1.0,3\n")
    assert message.startswith("line 5, column 'time':")
    assert "lines 2 and 5" in message and "'s'" in message


def test_duplicate_instant_written_in_two_zones(tmp_path):
    message = fault(tmp_path, "series_id,time,x\ns,2024-03-01T01:00+01:00,1\ns,2024-03-01T00:00Z,2\n")
    assert "lines 2 and 3" in message


def test_row_with_every_channel_empty(tmp_path):
    message = fault(tmp_path, "series_id,time,x,y\ns,1,1,\ns,2, ,\n")
    assert message.startswith("line 3, column 'x', 'y':") and "every channel is empty" in message


def test_channel_never_observed(tmp_path):
    message = fault(tmp_path, "series_id,time,x,y\ns,1,1,\ns,2,2,\n")
    assert message.startswith("line 1, column 'y':")


def test_wrong_number_of_cells(tmp_path):
    assert fault(tmp_path, "series_id,time,x\ns,1,2\ns,2,3,4\n").startswith("line 3: 4 cells")
    assert fault(tmp_path, "series_id,time,x,y\ns,1,2\n").startswith("line 2: 3 cells")


@pytest.mark.parametrize(("text", "start"), [
    ("", "line 1: the file is empty"),
    ("\n\n", "line 1: the file is empty"),
    ("series_id,time,x\n", "line 2: the file has a header but no observations"),
    ("id,time,x\ns,1,2\n", "line 1, column 1: expected header 'series_id'"),
    ("series_id,t,x\ns,1,2\n", "line 1, column 2: expected header 'time'"),
    ("series_id\n", "line 1, column 2: expected header 'time', found None"),
    ("series_id,time\ns,1\n", "line 1: no channel columns"),
    ("series_id,time,x,,y\ns,1,2,3,4\n", "line 1, column 4: a column has no name"),
    ("series_id,time,x,y,x\ns,1,2,3,4\n", "line 1, column 'x': column 5 repeats the name of column 3"),
    ("series_id,time,time\ns,1,2\n", "line 1, column 'time': column 3 repeats"),
])
def test_header_faults(tmp_path, text, start):
    assert fault(tmp_path, text).startswith(start)


def test_not_utf8_and_malformed_quotes(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("series_id,time,x\ns,1,2\nsé,2,3\n".encode("latin-1"))
    with pytest.raises(CsvFormatError, match=r"latin\.csv: line 3: not UTF-8"):
        load_csv(path)
    assert fault(tmp_path, 'series_id,time,x\ns,1,"2\n').startswith("line 2: malformed CSV")


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfseries_id,time,x\r\ns,1,2\r\ns,2,3\r\n")
    data = load_csv(path)
    assert data.channels == ["x"]
    assert data.series[0].values[:, 0].tolist() == [2.0, 3.0]


@pytest.mark.parametrize(("cell", "words"), [
    ("inf", "non-finite value 'inf'; leave the cell empty"),
    ("-Infinity", "non-finite value '-Infinity'; leave the cell empty"),
    ("NA", "'NA' is not a number; leave the cell empty"),
    ("null", "'null' is not a number; leave the cell empty"),
    ("abc", "'abc' is not a number"),
    ("1e400", "overflows a 64-bit float"),
])
def test_value_faults_say_what_to_do(tmp_path, cell, words):
    message = fault(tmp_path, f"series_id,time,x\ns,1,2\ns,2,{cell}\n")
    assert message.startswith("line 3, column 'x': ") and words in message


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_header_with_another_separator_says_so(tmp_path, separator, name):
    message = fault(tmp_path, separator.join(["series_id", "time", "x"]) + "\ns;1;2\n")
    assert f"separated by {name}, but they must be by commas" in message


def test_times_that_are_all_dates_written_yyyymmdd_are_refused(tmp_path):
    """They were read as plain numbers: 20240131 to 20240201 was a gap of 70, 20240101 to
    20240102 a gap of 1."""
    path = write(tmp_path, "series_id,time,x\ns,20240131,1\ns,20240201,2\nt,19991231,3\n")
    with pytest.raises(CsvFormatError) as fault:
        load_csv(path)
    assert str(fault.value) == (
        f"{path}: line 2, column 'time': '20240131' and every other time look like dates written YYYYMMDD, "
        "which would be read as plain numbers (20240131 to 20240201: a gap of 70); write them as ISO dates "
        "(2024-01-31) to have them read as dates, or with a decimal point (20240131.0) to have them read "
        "as numbers")


def test_times_that_are_nearly_all_compact_dates_or_months_are_refused(tmp_path):
    """One typo among 20 dates switched the refusal off, and months written YYYYMM (202412 to
    202501: a gap of 89) were not looked for."""
    days = [f"202401{day:02d}" for day in range(1, 20)] + ["20240132"]
    path = write(tmp_path, "series_id,time,x\n" + "".join(f"s,{day},{i}\n" for i, day in enumerate(days)))
    with pytest.raises(CsvFormatError, match=r"line 2, column 'time': '20240101' and 19 of the 20 times look "
                                             r"like dates written YYYYMMDD.*line 21's '20240132' is not one"):
        load_csv(path)
    months = ["202411", "202412", "202501", "202502"]
    rows = "".join(f"s,{month},{i}\n" for i, month in enumerate(months))
    with pytest.raises(CsvFormatError, match=r"'202411' and every other time look like dates written YYYYMM"
                                             r", .*202412 to 202501: a gap of 89.* ISO dates \(2024-11-01\)"):
        load_csv(write(tmp_path, "series_id,time,x\n" + rows))
    mixed = "".join(f"s,{day},{i}\n" for i, day in enumerate(days[:10])) + rows.replace("s,", "t,")
    with pytest.raises(CsvFormatError, match=r"'20240101' and every other time look like dates written "
                                             r"YYYYMMDD"):
        load_csv(write(tmp_path, "series_id,time,x\n" + mixed))  # days in one series, months in another


def test_both_ways_out_of_yyyymmdd_times_read_as_the_message_says(tmp_path):
    as_numbers = load_csv(write(tmp_path, "series_id,time,x\ns,20240131.0,1\ns,20240201.0,2\n"))
    assert as_numbers.time_unit is None
    np.testing.assert_array_equal(as_numbers.series[0].times, [20240131, 20240201])
    as_dates = load_csv(write(tmp_path, "series_id,time,x\ns,2024-01-31,1\ns,2024-02-01,2\n"))
    assert as_dates.time_unit == "days" and np.diff(as_dates.series[0].times).tolist() == [1.0]


@pytest.mark.parametrize("times", [
    ("0", "1", "1000"),                          # steps
    ("1700000000", "1700000060"),                # epoch seconds
    ("20240131", "20240132"),                    # not every time is a date
    ("20240131", "20240201.5"),
    ("17991231", "17991230"),                    # a year before any date taken for one
    ("10000101", "10000102"),
])
def test_numeric_times_that_are_not_all_dates_load_as_numbers(tmp_path, times):
    rows = "".join(f"s,{time},{value}\n" for value, time in enumerate(times))
    data = load_csv(write(tmp_path, "series_id,time,x\n" + rows))
    assert data.time_unit is None
    np.testing.assert_array_equal(data.series[0].times, sorted(float(time) for time in times))


def test_ids_that_differ_only_by_surrounding_whitespace_are_refused(tmp_path):
    """' b' and 'b' were merged into one series, interleaving two series' observations."""
    path = write(tmp_path, "series_id,time,x\nb,1,1\nb,2,2\n b,3,3\n")
    with pytest.raises(CsvFormatError, match=r"line 4, column 'series_id': series id ' b' differs from 'b' "
                                             r"\(line 2\) only by the whitespace around it"):
        load_csv(path)
    same = load_csv(write(tmp_path, "series_id,time,x\n b ,1,1\n b ,2,2\n"))
    assert [s.id for s in same.series] == ["b"]


def test_an_id_with_an_invisible_character_is_refused(tmp_path):
    """'b' and 'b' + U+200B look alike and were two series without a word."""
    path = write(tmp_path, "series_id,time,x\nb,1,1\nb\u200b,2,2\n")
    with pytest.raises(CsvFormatError, match=r"line 3, column 'series_id': .* invisible character \(U\+200B"):
        load_csv(path)
