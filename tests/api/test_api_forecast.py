"""POST /forecast through httpx on real (tiny, untrained) checkpoints: answers and every refusal."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from conftest import save_tiny_forecaster

SERIES = {"id": "s1", "times": [0.0, 0.37, 1.9, 2.2],
          "values": [[1.0, 0.5], [None, 0.4], [0.2, 0.1], [0.0, -0.3]], "at": [-0.5, 0.5, 3.0, 7.5]}
OTHERS = [{"id": "b", "times": [0.0, 1.0, 1.5], "values": [[2.0, 1.0], [1.5, None], [1.0, 0.0]],
           "at": [0.2, 5.0]},
          {"id": "c", "times": [3.0, 3.3, 4.1, 6.0], "values": [[0.1, 0.1]] * 4, "at": [2.0, 3.5, 9.0]}]


def post(client, series=None, **fields):
    return client.post("/forecast", json={"series": [SERIES] if series is None else series, **fields})


def refusal(answer, status=422):
    assert answer.status_code == status, answer.text
    return answer.json()["detail"][0]


def test_answer_shape_and_kinds(client):
    answer = post(client)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "tiny" and len(body["model_version"]) == 12 and body["nfe"] > 0
    (forecast,) = body["forecasts"]
    assert forecast["id"] == "s1" and forecast["at"] == SERIES["at"]
    assert forecast["kind"] == ["backcast", "interpolation", "extrapolation", "extrapolation"]
    mean, std = np.array(forecast["mean"]), np.array(forecast["std"])
    assert mean.shape == std.shape == (4, 2) and (std > 0).all()
    assert set(forecast["quantiles"]) == {"0.05", "0.5", "0.95"}
    low, mid, high = (np.array(forecast["quantiles"][q]) for q in ("0.05", "0.5", "0.95"))
    assert (low < mid).all() and (mid < high).all()
    versions = {m["name"]: m["version"] for m in client.get("/models").json()["models"]}
    assert body["model_version"] == versions["tiny"]


def test_requested_times_come_back_in_the_order_asked_with_repeats(client):
    forward = post(client, series=[{**SERIES, "at": [0.5, 3.0]}]).json()["forecasts"][0]
    shuffled = post(client, series=[{**SERIES, "at": [3.0, 0.5, 3.0]}]).json()["forecasts"][0]
    assert shuffled["at"] == [3.0, 0.5, 3.0]
    np.testing.assert_allclose(shuffled["mean"], [forward["mean"][1], forward["mean"][0], forward["mean"][1]],
                               rtol=1e-6)


def test_observations_in_any_order_give_the_sorted_answer(client):
    order = [2, 0, 3, 1]
    shuffled = {**SERIES, "times": [SERIES["times"][i] for i in order],
                "values": [SERIES["values"][i] for i in order]}
    assert post(client, series=[shuffled]).json()["forecasts"] == post(client).json()["forecasts"]


def test_same_seed_same_answer_other_seed_other_answer(client):
    first, again = post(client, seed=7).json(), post(client, seed=7).json()
    assert first == again
    assert post(client, seed=8).json()["forecasts"][0]["mean"] != first["forecasts"][0]["mean"]


def test_a_series_alone_and_in_a_batch_get_the_same_answer(client):
    alone = post(client).json()["forecasts"][0]
    batch = post(client, series=[OTHERS[0], SERIES, OTHERS[1]]).json()["forecasts"]
    assert [f["id"] for f in batch] == ["b", "s1", "c"]
    for key in ("mean", "std"):
        np.testing.assert_allclose(batch[1][key], alone[key], rtol=1e-3, atol=1e-3)
    for level in ("0.05", "0.95"):
        np.testing.assert_allclose(batch[1]["quantiles"][level], alone["quantiles"][level],
                                   rtol=1e-3, atol=1e-3)


def test_defaults_and_explicit_model(client):
    body = post(client, model="tiny", quantiles=[0.25], num_samples=4).json()
    assert list(body["forecasts"][0]["quantiles"]) == ["0.25"]
    anonymous = {k: v for k, v in SERIES.items() if k != "id"}
    assert post(client, series=[anonymous]).json()["forecasts"][0]["id"] is None


def test_timestamps_for_a_model_trained_on_them(client):
    series = {"times": ["2024-03-01T02:00:00Z", "2024-03-01T00:00:00Z", "2024-03-01T01:30:00+01:00"],
              "values": [1.0, 3.0, 2.0], "at": ["2024-03-01T12:00:00z", "2024-03-01T00:00:00+01:00"]}
    answer = client.post("/forecast", json={"model": "hourly", "series": [series]})
    assert answer.status_code == 200, answer.text
    forecast = answer.json()["forecasts"][0]
    assert forecast["at"] == series["at"] and forecast["kind"] == ["extrapolation", "backcast"]
    assert np.array(forecast["mean"]).shape == (2, 1)
    as_rows = client.post("/forecast", json={"model": "hourly", "series": [
        {**series, "values": [[1.0], [3.0], [2.0]]}]}).json()["forecasts"][0]
    assert as_rows == forecast
    # The same instants without zones are read as UTC.
    naive = {"times": ["2024-03-01T02:00:00", "2024-03-01T00:00:00", "2024-03-01T00:30:00"],
             "values": [1.0, 3.0, 2.0], "at": ["2024-03-01T12:00:00", "2024-02-29T23:00:00"]}
    as_utc = client.post("/forecast", json={"model": "hourly", "series": [naive]}).json()["forecasts"][0]
    assert {**as_utc, "at": series["at"]} == forecast


@pytest.mark.parametrize(("times", "values", "field", "words"), [
    (["2024-03-01T00:00:00Z", "2024-03-01T01:00:00+01:00"], [1.0, 2.0], "series[0].times[1]",
     "repeats times[0]"),
    (["2024-03-01T00:00:00.0000001Z", "2024-03-01T00:00:00.0000002Z"], [1.0, 2.0], "series[0].times[1]",
     "timestamps are resolved to microseconds"),
    (["2024-03-01T00:00:00Z", 5.0], [1.0, 2.0], "series[0].times[1]", "ISO-8601"),
    (["2024-03-01T00:00:00Z", "yesterday"], [1.0, 2.0], "series[0].times[1]", "not an ISO-8601"),
    # the trainer refuses a CSV that mixes them; read as UTC beside zoned times, a naive one is a guess
    (["2024-03-01T00:00:00+02:00", "2024-03-01T03:00:00"], [1.0, 2.0], "series[0].times[1]",
     "'2024-03-01T03:00:00' is a timestamp without one, but series[0].times[0] "
     "('2024-03-01T00:00:00+02:00') is a timestamp with a time zone"),
    (["2024-03-01T00:00:00", "2024-03-01T03:00:00"], [1.0, 2.0], "series[0].at[0]",
     "is a timestamp with a time zone, but series[0].times[0]"),
    (["2300-03-01T00:00:00.000001Z", "2300-03-01T00:00:00.000002Z"], [1.0, 2.0], "series[0].times[1]",
     "resolved to 1.9 microseconds this far from 1970"),
])
def test_timestamp_refusals(client, times, values, field, words):
    answer = client.post("/forecast", json={"model": "hourly", "series": [
        {"times": times, "values": values, "at": ["2024-03-01T05:00:00Z"]}]})
    error = refusal(answer)
    assert error["field"] == field and words in error["msg"]


def test_numeric_model_refuses_timestamps(client):
    error = refusal(post(client, series=[{**SERIES, "at": [1.0, "2024-03-01T00:00:00Z"]}]))
    assert error["field"] == "series[0].at[1]" and "numeric times" in error["msg"]


def with_series(**changes):
    return [{**SERIES, **changes}]


@pytest.mark.parametrize(("series", "field", "words"), [
    (with_series(values=[[1.0, 0.5, 3.0], [None, 0.4], [0.2, 0.1], [0.0, -0.3]]), "series[0].values[0]",
     "3 values; model 'tiny' has 2 channels (x, y): give one row of 2 per time"),
    (with_series(values=[1.0, 0.4, 0.2, 0.0]), "series[0].values[0]",
     "1 value; model 'tiny' has 2 channels (x, y): give one row of 2 per time (a flat list of numbers is "
     "for one-channel models)"),
    (with_series(values=[[1.0, 0.5], [0.2, 0.1]]), "series[0].values", "2 rows of values for 4 times"),
    (with_series(values=[[1.0, 0.5], [None, None], [0.2, 0.1], [0.0, -0.3]]), "series[0].values[1]",
     "every channel is missing"),
    (with_series(times=[0.0, 0.37, 1.9, 0.37]), "series[0].times[3]", "repeats times[1]"),
    (with_series(times=[2**53, 2**53 + 1, 2**53 + 4, 2**53 + 6]), "series[0].times[1]",
     "9007199254740993 is equal to times[0] (9007199254740992) at float64 precision"),
    (with_series(times=[]), "series[0].times", "at least 1 item"),
    (with_series(at=[]), "series[0].at", "at least 1 item"),
    (with_series(at=[1.0, 12.3]), "series[0].at[1]", "12.3 time units after the series' first observation"),
    (with_series(times=[0.0, 0.37, 1.9, 12.5]), "series[0].times", "span 12.5 time units"),
    (with_series(at=[-10.5]), "series[0].at[0]", "10.5 time units before the series' first observation"),
    (with_series(values=[[True, 0.5], [None, 0.4], [0.2, 0.1], [0.0, -0.3]]), "series[0].values[0][0]",
     "valid number"),
    (with_series(values=[[1.0, "0.5"], [None, 0.4], [0.2, 0.1], [0.0, -0.3]]), "series[0].values[0][1]",
     "valid number"),
    (with_series(times=[0.0, None, 1.9, 2.2]), "series[0].times[1]", "number or an ISO-8601"),
    (with_series(id=5), "series[0].id", "valid string"),
    (with_series(horizon=5), "series[0].horizon", "Extra inputs"),
    ([], "series", "at least 1 item"),
])
def test_malformed_series_name_the_field(client, series, field, words):
    error = refusal(post(client, series=series))
    assert error["field"] == field and words in error["msg"], error


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"quantiles": [0.5, 1.0]}, "quantiles[1]", "finite number in (0, 1)"),
    ({"quantiles": [0.0]}, "quantiles[0]", "finite number in (0, 1)"),
    ({"quantiles": [0.5, 0.2, 0.5]}, "quantiles[2]", "asked for twice"),
    ({"num_samples": 0}, "num_samples", "greater than or equal to 1"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"model": 3}, "model", "valid string"),
    ({"seed": True}, "seed", "valid integer"),
    ({"seed": "5"}, "seed", "valid integer"),
    ({"seed": 1.0}, "seed", "valid integer"),
    ({"num_samples": True}, "num_samples", "valid integer"),
    ({"num_samples": "8"}, "num_samples", "valid integer"),
    ({"num_samples": 8.0}, "num_samples", "valid integer"),
    ({"quantiles": ["0.5"]}, "quantiles[0]", "finite number in (0, 1)"),
    ({"quantiles": [0.5, True]}, "quantiles[1]", "finite number in (0, 1)"),
    ({"steps": 3}, "steps", "Extra inputs"),
])
def test_malformed_options_name_the_field(client, fields, field, words):
    error = refusal(post(client, **fields))
    assert error["field"] == field and words in error["msg"], error


@pytest.mark.parametrize(("text", "field"), [
    ('"values": [[1.0, 1e999], [0.0, 0.0]], "times": [0, 1], "at": [2]', "series[0].values[0][1]"),
    ('"values": [[1.0, NaN], [0.0, 0.0]], "times": [0, 1], "at": [2]', "series[0].values[0][1]"),
    ('"values": [[1.0, 2.0], [0.0, 0.0]], "times": [0, Infinity], "at": [2]', "series[0].times[1]"),
    ('"values": [[1.0, 2.0], [0.0, 0.0]], "times": [0, 1], "at": [-Infinity]', "series[0].at[0]"),
])
def test_non_finite_numbers_are_refused(client, text, field):
    answer = client.post("/forecast", content="{\"series\": [{" + text + "}]}",
                         headers={"Content-Type": "application/json"})
    error = refusal(answer)
    assert error["field"] == field and "finite" in error["msg"]


@pytest.mark.parametrize("level", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_quantile_is_told_the_range(client, level):
    error = refusal(raw_post(client, f'{{"series": [{json.dumps(SERIES)}], "quantiles": [0.5, {level}]}}'))
    assert error["field"] == "quantiles[1]"
    assert error["msg"] == "Input should be a finite number in (0, 1), exclusive"


@pytest.mark.parametrize("time", ["true", "null", "[1]", '{"t": 1}'])
def test_a_time_must_be_a_number_or_a_string(client, time):
    text = f'"values": [[1.0, 2.0], [0.0, 0.0]], "times": [0, {time}], "at": [2]'
    answer = client.post("/forecast", content="{\"series\": [{" + text + "}]}",
                         headers={"Content-Type": "application/json"})
    error = refusal(answer)
    assert error["field"] == "series[0].times[1]" and "ISO-8601 timestamp string" in error["msg"]


def test_malformed_bodies(client):
    broken = client.post("/forecast", content=b'{"series": [', headers={"Content-Type": "application/json"})
    assert refusal(broken)["msg"].startswith("invalid JSON at character 12")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = refusal(client.post("/forecast", content=b'{"series": []}', headers=headers), 415)
        assert answer["field"] == "header.Content-Type" and "application/json" in answer["msg"]
    for content_type in ("Application/JSON; charset=UTF-8", "application/merge-patch+json"):
        answer = client.post("/forecast", content=b'{"series": []}', headers={"Content-Type": content_type})
        assert refusal(answer)["field"] == "series"
    assert refusal(client.post("/forecast", json=[1, 2]))["field"] == "body"
    assert refusal(client.post("/forecast", json={}))["field"] == "series"


@pytest.mark.parametrize(("limit", "fields", "field"), [
    ({"max_series": 2}, {"series": [SERIES] * 3}, "series"),
    ({"max_observations": 3}, {}, "series[0].times"),
    ({"max_times": 3}, {}, "series[0].at"),
    ({"max_samples": 8}, {"num_samples": 9}, "num_samples"),
    ({"max_quantiles": 2}, {}, "quantiles"),
    ({"max_sample_points": 100}, {"num_samples": 30}, "num_samples"),
    # too many times in a series is told as such, not as too many sample points
    ({"max_times": 3, "max_sample_points": 100}, {"num_samples": 30}, "series[0].at"),
    # 4 times x 2 channels x (mean, std, 3 quantiles) = 40 numbers; without quantiles 16
    ({"max_answer_values": 39}, {"quantiles": [0.05, 0.5, 0.95]}, "quantiles"),
    ({"max_answer_values": 39}, {}, "series"),        # the default levels: not a field the client sent
    ({"max_answer_values": 15}, {"quantiles": []}, "series"),
])
def test_over_limit_requests(make_client, limit, fields, field):
    client = make_client(**limit)
    error = refusal(client.post("/forecast", json={"series": [SERIES], **fields}))
    assert error["field"] == field and error["type"] == "over_limit"
    assert "limit is" in error["msg"] and "ODECAST_MAX_" in error["msg"]


def test_model_lookup_refusals(client):
    assert refusal(post(client, model="nope"), 404)["field"] == "model"
    empty = refusal(post(client, model=""))  # not the default model; as on /classify
    assert empty["field"] == "model" and "at least 1 character" in empty["msg"]
    failed = refusal(post(client, model="tampered"), 503)
    assert failed["field"] == "model" and "does not match" in failed["msg"]


def test_solver_step_cap_is_a_422_with_the_reason_naming_the_series(client):
    at_first_observation = {**SERIES, "at": [SERIES["times"][0]]}  # needs no solve
    error = refusal(post(client, [at_first_observation, SERIES], model="stiff"))
    assert error["type"] == "solver_step_limit" and "gave up (max_num_steps" in error["msg"]
    assert error["field"] == "series[1]"


@pytest.mark.parametrize(("times", "second"), [([0.0, 1e-300, 2.0], 1), ([5e-324, 2.0, 1e-323], 2)])
def test_times_the_model_cannot_tell_apart_are_named(client, times, second):
    """Distinct in the request, equal once the model reads them (float32, relative to the first)."""
    series = {"times": times, "values": [[1.0, 0.5]] * 3, "at": [3.0]}
    error = refusal(post(client, [SERIES, series]))
    assert error["type"] == "indistinct_time" and "float32" in error["msg"]
    assert error["field"] == f"series[1].times[{second}]"


def test_values_far_outside_the_training_data_are_refused(client):
    outside = {**SERIES, "values": [[1.0, 0.5], [None, 0.4], [0.2, 1e9], [0.0, -0.3]]}
    error = refusal(post(client, [SERIES, outside]))
    assert error["field"] == "series[1].values[2][1]" and error["type"] == "value_out_of_range"
    assert "1e+09 is out of range" in error["msg"] and "training standard deviations" in error["msg"]


@pytest.mark.parametrize("first", [10.664, 22.95, -13.813])
def test_the_limits_themselves_are_answered_however_they_round(client, first):
    """``first + max_span`` (10.0 here) and ``first - max_backcast`` (5.0), computed by a client,
    can land a rounding beyond them (at first = 10.664, ``at - first`` reads 10.000000000000002;
    at -13.813, ``first - at`` reads 5.000000000000002); a client that asks for exactly the limit
    is answered."""
    series = {"times": [first, first + 0.5], "values": [[1.0, 0.5], [0.9, 0.4]],
              "at": [first + 10.0, first - 5.0]}
    assert (series["at"][0] - first > 10.0) or (first - series["at"][1] > 5.0)
    answer = post(client, [series])
    assert answer.status_code == 200, answer.text
    assert answer.json()["forecasts"][0]["kind"] == ["extrapolation", "backcast"]
    within = [first + 10.0 * (1 + 1e-12), first - 5.0 * (1 + 1e-12)]   # rounding of the limits' own
    assert post(client, [{**series, "at": within}]).status_code == 200
    after = refusal(post(client, [{**series, "at": [first + 10.0 * (1 + 1e-8)]}]))
    assert after["type"] == "beyond_horizon" and after["field"] == "series[0].at[0]"
    assert "lies 10.0000001 time units after the series' first observation" in after["msg"], after
    assert "at most 10 time units after it (its longest training series)" in after["msg"]
    before = refusal(post(client, [{**series, "at": [first - 5.0 * (1 + 1e-8)]}]))
    assert re.search(r"lies 5\.00000\d+ time units before the series' first observation", before["msg"])
    assert "backcasts at most 5 time units" in before["msg"]


def test_a_window_and_its_forecast_fit_in_the_longest_training_series(client):
    """Every answer integrates from the first observation: a window of 8 leaves 2 to forecast."""
    series = {"times": [0.0, 8.0], "values": [[1.0, 0.5], [0.9, 0.4]], "at": [9.5, 10.0]}
    assert post(client, [series]).status_code == 200
    error = refusal(post(client, [{**series, "at": [9.5, 10.5]}]))
    assert error["field"] == "series[0].at[1]" and "send only the observations of the last 10" in error["msg"]


def test_a_model_not_trained_to_backcast_says_so(models_dir, make_client):
    save_tiny_forecaster(models_dir / "forward", max_backcast=0.0)
    client = make_client(default_model="forward")
    series = {"times": [0.0, 1.0], "values": [[1.0, 0.5], [0.9, 0.4]], "at": [0.5, -0.25]}
    error = refusal(post(client, [series]))
    assert error["field"] == "series[0].at[1]" and error["type"] == "beyond_horizon"
    assert "was not trained to backcast: ask for times from the first observation on" in error["msg"]
    listed = next(m for m in client.get("/models").json()["models"] if m["name"] == "forward")
    assert listed["max_backcast"] == 0 and listed["max_span"] == 10


@pytest.mark.parametrize(("times", "at", "kind"), [
    ([1e17, 1e17 + 16, 1e17 + 32], [1e17 + 16], "window_too_long"),  # 16 apart: float64's step there
    ([1e17], [1e17 + 64], "beyond_horizon"),
    ([1.7e18], [1.7e18 + 1024], "beyond_horizon"),                     # epoch nanoseconds
])
def test_the_horizon_holds_at_any_magnitude_of_time(client, times, at, kind):
    """A rounding slack that grew with the times' size let these through, to a forecast of 5e8."""
    series = {"times": times, "values": [[1.0, 0.5]] * len(times), "at": at}
    assert refusal(post(client, [series]))["type"] == kind


def test_a_span_beyond_float32_is_refused_without_a_warning(client):
    """numpy warned 'overflow encountered in cast' on the way to the right 422."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        error = refusal(post(client, [{"times": [0, 1e300], "values": [[0, 0], [0, 0]], "at": [1]}]))
    assert error["type"] == "window_too_long"


def test_a_value_just_over_its_limit_is_shown_apart_from_the_limit(client):
    models = client.get("/models").json()["models"]
    limit = next(m for m in models if m["name"] == "tiny")["value_limits"][1][1]
    over = float(np.nextafter(limit, np.inf))
    error = refusal(post(client, [{**SERIES, "values": [[1.0, 0.5], [None, over], [0.2, 0.1], [0.0, -0.3]]}]))
    assert error["type"] == "value_out_of_range"
    shown, bound = re.fullmatch(r"(\S+) is out of range: .* within \[\S+, (\S+)\], .*", error["msg"]).groups()
    assert float(shown) == over and float(bound) == pytest.approx(limit) and shown != bound, error["msg"]


def raw_post(client, text):
    return client.post("/forecast", content=text, headers={"Content-Type": "application/json"})


HUGE = "1" + "0" * 400  # 10**400: a JSON integer, beyond any float


@pytest.mark.parametrize(("times", "at", "field"), [
    (f"[0, 1, 2, {HUGE}]", "[2]", "series[0].times[3]"),
    ("[0, 1, 2, 3]", f"[-{HUGE}]", "series[0].at[0]"),
])
def test_an_integer_beyond_any_float_is_a_422_naming_the_time(client, times, at, field):
    values = json.dumps(SERIES["values"])
    error = refusal(raw_post(client, f'{{"series": [{{"times": {times}, "values": {values}, "at": {at}}}]}}'))
    assert error["field"] == field and "too large" in error["msg"] and len(error["msg"]) < 200, error


@pytest.mark.parametrize(("field", "words"), [("num_samples", "the limit is"),
                                             ("seed", "less than or equal")])
@pytest.mark.parametrize("value", [HUGE, str(2**64), str(-2**64), "1e20"])  # orjson reads 2**64 as a float
def test_huge_counts_are_refused_without_echoing_every_digit(client, field, words, value):
    error = refusal(raw_post(client, f'{{"series": [{json.dumps(SERIES)}], "{field}": {value}}}'))
    if value != HUGE:
        words = "whole number of at most 18 digits"
    assert error["field"] == field and words in error["msg"] and len(error["msg"]) < 200, error
    if field == "num_samples" and value == HUGE:
        assert "(401 digits)" in error["msg"]


def test_long_strings_are_cut_in_messages(client):
    series = {"times": ["2024-03-01T00:00:00Z", "x" * 10_000], "values": [1.0, 2.0],
              "at": ["2024-03-01T05:00:00Z"]}
    error = refusal(client.post("/forecast", json={"model": "hourly", "series": [series]}))
    assert error["field"] == "series[0].times[1]" and "(10002 characters)" in error["msg"]
    assert len(error["msg"]) < 200 and "not an ISO-8601 timestamp" in error["msg"]
    error = refusal(post(client, series=[{**SERIES, "at": ["y" * 10_000]}]))
    assert error["field"] == "series[0].at[0]" and len(error["msg"]) < 200


def test_a_channel_never_observed_is_refused_unless_the_model_was_trained_for_it(models_dir, make_client):
    save_tiny_forecaster(models_dir / "hiding", unseen_channels=True)
    client = make_client()
    series = {"times": [0.0, 1.0, 2.0], "values": [[None, 0.5], [None, 0.4], [None, 0.2]], "at": [3.0]}
    error = refusal(post(client, [SERIES, series]))
    assert error["field"] == "series[1].values" and error["type"] == "channel_never_observed"
    assert "channel 'x' is never observed in this series; model 'tiny' was not trained" in error["msg"]
    assert post(client, [{**series, "values": [[1.0, 0.5], [None, 0.4], [None, 0.2]]}]).status_code == 200
    assert post(client, [series], model="hiding").status_code == 200
    listed = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert listed["hiding"]["unseen_channels"] is True and listed["tiny"]["unseen_channels"] is False


def test_a_timestamp_model_answers_its_own_limits_on_any_date(models_dir, make_client):
    """A trainer records the limits from timestamps divided into its unit, so they carry rounding
    (a span of 86644 s was recorded as 86643.9999999851 s): a window and a backcast of exactly the
    limits were refused on some dates and not others. Here they are recorded 1e-12 short."""
    from datetime import UTC, datetime, timedelta
    save_tiny_forecaster(models_dir / "rounded", channels=("load",), time_unit="hours", time_scale=24.0,
                         max_span=72.0 * (1 - 1e-12), max_backcast=36.0 * (1 - 1e-12))
    client = make_client()
    rng = np.random.default_rng(0)
    series = []
    for seconds in rng.integers(0, 2_000_000_000, 40):
        first = datetime.fromtimestamp(int(seconds), UTC)
        stamp = [(first + timedelta(hours=h)).isoformat() for h in (0, 72, -36)]
        series.append({"times": stamp[:2], "values": [1.0, 2.0], "at": [stamp[1], stamp[2]]})
    answer = client.post("/forecast", json={"model": "rounded", "series": series})
    assert answer.status_code == 200, answer.text
