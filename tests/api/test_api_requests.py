"""Request bodies: read as json.loads reads them, only faster; read after the API key check."""

import gzip
import json
import math
import threading

import pytest
from fastapi.exceptions import RequestValidationError

from service.api import json_reading
from service.api.errors import ApiError, error_item, error_response
from service.api.json_reading import loads
from service.api.requests import is_json_media_type

orjson_loads = json_reading.orjson.loads


@pytest.mark.parametrize("body", [
    b'{"series": [{"times": [0, 0.37, 1.9], "values": [[1.0, null], [2, 3e-5]], "at": ["2024-01-01"]}]}',
    '{"id": "série \\u00e9", "x": [-0.0, 1e308, 5e-324]}'.encode(),
    json.dumps({"big": 2**70, "neg": -(2**64), "huge": 10**400}).encode(),  # beyond orjson's integers
])
def test_bodies_read_as_json_loads_reads_them(body):
    assert loads(body) == json.loads(body)


def test_a_utf8_byte_order_mark_is_skipped():
    assert loads(b'\xef\xbb\xbf{"a": [1, NaN]}')["a"][0] == 1


@pytest.mark.parametrize(("body", "words"), [
    ('{"a": [1, 2]}'.encode("utf-16"), "not UTF-8 (byte 0xff at offset 0)"),
    ('{"a": [1, 2]}'.encode("utf-32"), "UTF-16 or UTF-32"),
    (b'{"id": "s\xff1"}', "not UTF-8 (byte 0xff at offset 9)"),
    (b'{"id": "\xed\xa0\x80"}', "not UTF-8 (byte 0xed at offset 8)"),  # a surrogate, UTF-8 encoded
])
def test_only_utf8_is_read(body, words):
    with pytest.raises(ApiError) as error:
        loads(body)
    (item,) = error.value.errors
    assert error.value.status_code == 422 and item["field"] == "body" and words in item["msg"]


def test_utf16_without_a_byte_order_mark_is_named_in_the_json_error():
    with pytest.raises(RequestValidationError, match="UTF-16 or UTF-32"):
        loads('{"a": 1}'.encode("utf-16-le"))


def test_non_finite_literals_reach_validation():
    parsed = loads(b'{"values": [NaN, Infinity, -Infinity, 1e999]}')
    assert math.isnan(parsed["values"][0]) and parsed["values"][1:] == [math.inf, -math.inf, math.inf]


@pytest.mark.parametrize(("body", "position", "reason"), [
    (b'{"series": [', 12, "Expecting value"),
    (b"[" * 100_000 + b"NaN" + b"]" * 100_000, 0, "nested too deeply"),  # json.loads: RecursionError
    (b'{"seed": ' + b"9" * 4301 + b"}", 9, "more digits"),  # beyond Python's int conversion cap
], ids=["truncated", "deep", "digits"])
def test_malformed_json_raises_json_loads_error(body, position, reason):
    with pytest.raises(RequestValidationError) as error:
        loads(body)
    (item,) = error.value.errors()
    assert item["type"] == "json_invalid" and item["loc"] == ("body", position)
    assert reason in item["ctx"]["error"]


@pytest.mark.parametrize(("content_type", "json"), [
    ("application/json", True), ("Application/JSON; charset=utf-8", True), ("application/vnd.api+json", True),
    (" application/json ;x=1", True), ("text/plain", False), ("application/x-www-form-urlencoded", False),
    ("application/jsonx", False), ("text/x+json", False), ("", False),
])
def test_json_media_types(content_type, json):
    assert is_json_media_type(content_type) is json


def test_forecast_reads_its_body_through_it(client, monkeypatch):
    bodies = []

    def loads(body):
        bodies.append(body)
        return orjson_loads(body)

    monkeypatch.setattr(json_reading.orjson, "loads", loads)
    series = {"times": [0.0, 1.0], "values": [[1.0, 2.0], [0.5, 1.5]], "at": [2.0]}
    assert client.post("/forecast", json={"series": [series], "num_samples": 2}).status_code == 200
    assert len(bodies) == 1 and json.loads(bodies[0])["series"] == [series]


@pytest.mark.parametrize("body", [b'{"series": [', b"\xff\xfe{}", b"[1, 2]", b'{"series": []}'])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_the_api_key_is_checked_before_the_body_is_read(make_client, body, content_type):
    client = make_client(api_key="secret")
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client.post("/forecast", content=body, headers=headers)
    assert answer.status_code == 401 and answer.json()["detail"][0]["type"] == "missing_api_key"
    keyed = client.post("/forecast", content=b'{"series": [', headers={**headers, "X-API-Key": "secret"})
    assert keyed.status_code == (422 if content_type == "application/json" else 415)


def test_forecast_bodies_in_utf8_only_and_never_encoded(client):
    body = '{"series": [{"id": "s\u00e9", "times": [0, 1], "values": [[1, 2], [3, 4]], "at": [2]}]}'
    headers = {"Content-Type": "application/json"}
    with_bom = client.post("/forecast", content=b"\xef\xbb\xbf" + body.encode(), headers=headers)
    assert with_bom.status_code == 200
    for encoded in (body.encode("utf-16"), body.encode().replace(b"\xc3\xa9", b"\xff")):
        error = client.post("/forecast", content=encoded, headers=headers).json()["detail"][0]
        assert error["field"] == "body" and error["type"] == "body_not_utf8", error
    for encoding in ("gzip", "deflate", "br"):
        answer = client.post("/forecast", content=gzip.compress(body.encode()),
                             headers={**headers, "Content-Encoding": encoding})
        assert answer.status_code == 415
        assert answer.json()["detail"][0]["field"] == "header.Content-Encoding"
    plain = client.post("/forecast", content=body.encode(), headers={**headers, "Content-Encoding": "gzip"})
    assert plain.status_code == 415  # not silently ignored
    headers["Content-Encoding"] = "Identity"
    assert client.post("/forecast", content=body.encode(), headers=headers).status_code == 200


VALID = '"times": [0, 1], "values": [[1, 2], [3, 4]], "at": [2]'


@pytest.mark.parametrize(("text", "field"), [
    ('{"series": [{"id": "\\ud800", ' + VALID + '}]}', "series[0].id"),
    ('{"model": "ti\\uDC00ny", "series": [{' + VALID + '}]}', "model"),
    ('{"series": [{' + VALID + ', "\\ud800": 1}]}', "series[0].\\ud800"),
    ('{"\\udfff\\ud800": [], "series": [{' + VALID + '}]}', "\\udfff\\ud800"),
    ('{"series": [{"times": [0, "2024-01-01T00:00:00\\ud800"], "values": [1, 2], "at": [NaN]}]}',
     "series[0].times[1]"),
])
def test_lone_surrogates_are_refused_naming_the_field(client, text, field):
    answer = client.post("/forecast", content=text.encode(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["field"] == field and error["type"] == "string_unicode"
    assert "lone UTF-16 surrogate" in error["msg"]


def test_surrogate_pairs_are_read():
    assert loads(b'{"id": "\\ud83d\\ude00", "x": NaN}')["id"] == "\U0001F600"


@pytest.mark.parametrize("path", ["/forecast", "/v2/models/x/infer"])
def test_error_bodies_that_echo_a_lone_surrogate_can_be_written(path):
    answer = error_response(path, 422, [error_item(("body", "a\ud800"), "'b\udfff' is wrong", "t")])
    text = json.loads(answer.body)
    assert "\\ud800" in json.dumps(text) and "\\\\udfff" in answer.body.decode()


def test_every_content_encoding_header_is_read_and_two_content_types_are_refused(client):
    body = (b'{"series": [{"times": [0, 1], "values": [[1, 2], [3, 4]], "at": [2]}]}')
    json_type = ("Content-Type", "application/json")
    for codings in ([("Content-Encoding", "identity"), ("Content-Encoding", "gzip")],
                    [("Content-Encoding", "identity, br")]):
        answer = client.post("/forecast", content=body, headers=[json_type, *codings])
        assert answer.status_code == 415 and "header.Content-Encoding" == answer.json()["detail"][0]["field"]
    for route in ("/forecast", "/classify"):
        for second in ("text/plain", "multipart/form-data; boundary=x"):
            answer = client.post(route, content=body, headers=[json_type, ("Content-Type", second)])
            assert answer.status_code == 415, (route, second)
            assert "2 different Content-Type headers" in answer.json()["detail"][0]["msg"]


def test_classify_and_infer_refuse_encoded_bodies_as_forecast_does(client):
    pixels = b'{"image": [' + b",".join([b"[" + b",".join([b"0"] * 28) + b"]"] * 28) + b"]}"
    answer = client.post("/classify", content=pixels,
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert answer.status_code == 415 and answer.json()["detail"][0]["field"] == "header.Content-Encoding"
    infer = client.post("/v2/models/digits/infer", content=b"{}",
                        headers={"Content-Type": "application/json", "Content-Encoding": "IDENTITY"})
    assert infer.status_code == 400 and "Content-Encoding" not in infer.json()["error"]  # read, then refused


def test_a_query_string_on_a_body_route_is_refused_not_ignored(client):
    body = b'{"series": [{"times": [0, 1], "values": [[1, 2], [3, 4]], "at": [2]}]}'
    for route in ("/forecast?model=digits&seed=5", "/classify?model=tiny"):
        answer = client.post(route, content=body, headers={"Content-Type": "application/json"})
        error = answer.json()["detail"][0]
        assert answer.status_code == 422 and error["type"] == "query_not_accepted", route
        assert error["field"] == "query.model" and "JSON body" in error["msg"]


def repeated(item: str, count: int = 100_000) -> str:
    return ", ".join([item] * count)


STRING_IMAGE = "[" + repeated("[" + repeated('"0"', 28) + "]", 28) + "]"
BAD_INPUT = '{"name": "input", "shape": [' + repeated('"1"', 1000) + '], "datatype": "FP32"}'


@pytest.mark.parametrize(("route", "body", "field"), [
    ("/forecast", '{"series": [{"times": [0], "values": [' + repeated("[true, true]") + '], "at": [1]}]}',
     "series[0].values[0][0]"),
    ("/forecast", '{"series": [{"times": [' + repeated("null") + '], "values": [1], "at": [1]}]}',
     "series[0].times[0]"),
    ("/forecast", '{"series": [' + repeated("{" + VALID + ', "x": 1}', 20_000) + "]}", "series[0].x"),
    ("/forecast", "{" + ", ".join(f'"k{i}": 1' for i in range(100_000)) + ', "series": [{' + VALID + "}]}",
     "k0"),
    ("/forecast", '{"series": [{' + VALID + '}], "quantiles": [' + repeated('"a"') + "]}", "quantiles[0]"),
    ("/classify", '{"images": [' + repeated(STRING_IMAGE, 300) + "]}", "images[0][0][0]"),
    ("/classify", "{" + ", ".join(f'"k{i}": 1' for i in range(100_000)) + "}", "k0"),
    ("/v2/models/digits/infer", '{"inputs": [' + repeated(BAD_INPUT, 1000) + "]}", "inputs[0].shape[0]"),
], ids=["rows", "times", "series", "keys", "quantiles", "images", "classify-keys", "infer-inputs"])
def test_a_body_full_of_faults_is_answered_at_once_with_the_first(client, route, body, field):
    """Each fault used to be an error of its own: 100,000 bad rows took 3.5 s of the event loop
    (every other request waited) and answered 28 MB."""
    answer = client.post(route, content=body.encode(), headers={"Content-Type": "application/json"})
    assert answer.status_code in (400, 422) and len(answer.content) < 1000, answer.text[:1000]
    if route.startswith("/v2/"):
        assert answer.json()["error"].startswith(field + ": "), answer.json()
    else:
        (error,) = answer.json()["detail"]
        assert error["field"] == field, error


@pytest.mark.parametrize(("body", "field"), [
    ('{"series": [{"times": [0, 1], "values": [[1, 1' + "0" * 400 + '], [3, 4]], "at": [2]}]}',
     "series[0].values[0][1]"),
], ids=["huge"])
def test_a_value_beyond_any_float_is_told_so(client, body, field):
    answer = client.post("/forecast", content=body, headers={"Content-Type": "application/json"})
    (error,) = answer.json()["detail"]
    assert error["field"] == field and error["msg"] == "Input should be a finite number", error


@pytest.mark.parametrize(("route", "body", "field"), [
    ("/forecast", '{"series": "x"}', "series"),
    ("/forecast", '{"series": [5]}', "series[0]"),
    ("/classify", '{"image": 5}', "image"),
])
def test_type_errors_speak_json(client, route, body, field):
    (error,) = client.post(route, content=body, headers={"Content-Type": "application/json"}).json()["detail"]
    assert error["field"] == field and error["msg"] in ("Input should be a valid array",
                                                        "Input should be an object"), error


@pytest.mark.parametrize("route", ["/classify", "/v2/models/digits/infer"])
def test_every_json_body_is_read_alike(client, route):
    """A lone surrogate and UTF-16 are refused with the same words as /forecast's."""
    answer = client.post(route, content=b'{"model": "\\ud800"}', headers={"Content-Type": "application/json"})
    assert answer.status_code in (400, 422) and "lone UTF-16 surrogate" in answer.text, answer.text
    answer = client.post(route, content='{"a": 1}'.encode("utf-16-le"),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code in (400, 422) and "UTF-16 or UTF-32" in answer.text, answer.text


@pytest.mark.parametrize(("body", "field"), [
    ('{"series": [{' + VALID + ', "at": [3]}], "num_samples": 4}', "series[0].at"),
    ('{"series": [{' + VALID + '}], "num_samples": 4, "num_samples" : 8}', "num_samples"),
    ('{"series": [{' + VALID + '}], "seed": NaN, "seed": 1}', "seed"),  # read by json.loads
    ('{"series": [{' + VALID + ', "id": "\\u00e9", "id": "\u00e9"}]}', "series[0].id"),
])
def test_a_key_given_twice_is_refused_not_half_read(client, body, field):
    """Both JSON readers keep the last of two equal keys without a word: the answer was for
    ``"at": [3]`` alone, or for 8 samples."""
    answer = client.post("/forecast", content=body.encode(), headers={"Content-Type": "application/json"})
    (error,) = answer.json()["detail"]
    assert answer.status_code == 422 and error["field"] == field and error["type"] == "duplicate_key", error
    assert "given twice" in error["msg"]


@pytest.mark.parametrize("body", [
    b'{"id": "a\\": b", "x": [[1, 2], [3, 4]], "y": [{"k": 1}, {"k": 2}]}',  # a quote, a colon in a string
    b'{"a": [1, {"b": 2}], "c": [[1], [{"b": 3}]]}',  # objects where the fast count does not look
])
def test_bodies_without_repeated_keys_read_alike_whatever_their_shape(body):
    assert loads(body) == json.loads(body)


@pytest.mark.parametrize(("route", "body", "words"), [
    ("/forecast", gzip.compress(b'{"series": []}'), "gzip-compressed"),
    ("/forecast", b"", "the body is empty"),
    ("/classify", b" \r\n", "the body is empty"),
])
def test_compressed_and_empty_bodies_are_told_so(client, route, body, words):
    answer = client.post(route, content=body, headers={"Content-Type": "application/json"})
    (error,) = answer.json()["detail"]
    assert answer.status_code == 422 and error["field"] == "body" and words in error["msg"], error


def post_in_time(client, route, body, seconds=60):
    """The answer to ``body``, or a failure after ``seconds``: a hang guard, not a timing target."""
    answers = []
    worker = threading.Thread(target=lambda: answers.append(
        client.post(route, content=body, headers={"Content-Type": "application/json"})), daemon=True)
    worker.start()
    worker.join(seconds)
    assert answers, f"no answer within {seconds} s"
    return answers[0]


@pytest.mark.parametrize("body", [
    b"[" * 40 + b'{"a": 1}' + b"]" * 40,  # counting its keys once took 2**depth steps: 2**40
    b'{"id": "a\\": b", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",  # deeper than Python recursion goes
    b"{" + b'"a": {' * 600 + b"}" * 600 + b"}",
])
@pytest.mark.parametrize("route", ["/forecast", "/classify", "/v2/models/digits/infer"])
def test_deep_bodies_are_refused_not_a_500_or_a_stall(client, route, body):
    answer = post_in_time(client, route, body)
    assert answer.status_code in (400, 422), answer.text[:300]


def test_an_object_with_two_unknown_fields_is_one_error(client):
    answer = client.post("/forecast", json={"series": [{"times": [0], "values": [[1, 2]], "at": [1], "x": 1,
                                                        "y": 2}], "z": 3, "w": 4})
    assert [error["field"] for error in answer.json()["detail"]] == ["series[0].x", "z"]


def test_a_long_repeated_key_is_named_cut(client):
    key = "k" * 100_000
    body = f'{{"series": [{{{VALID}}}], "{key}": 1, "{key}": 2}}'.encode()
    answer = client.post("/forecast", content=body, headers={"Content-Type": "application/json"})
    (error,) = answer.json()["detail"]
    assert error["type"] == "duplicate_key" and error["field"].startswith("kkk")
    assert len(answer.content) < 1000


def test_a_large_body_is_read_alike_off_the_event_loop(client):
    padding = ", ".join(['"' + "p" * 50 + '"'] * (2 * json_reading.INLINE_BYTES // 50))
    body = f'{{"series": [{{{VALID}, "id": "a"}}], "quantiles": [0.5], "quantiles": [{padding}]}}'.encode()
    assert len(body) > json_reading.INLINE_BYTES
    headers = {"Content-Type": "application/json"}
    (error,) = client.post("/forecast", content=body, headers=headers).json()["detail"]
    assert error["field"] == "quantiles" and error["type"] == "duplicate_key"
    long_id = "i" * len(body)
    valid = client.post("/forecast", content=f'{{"series": [{{{VALID}, "id": "{long_id}"}}]}}',
                        headers=headers)
    assert valid.status_code == 200 and valid.json()["forecasts"][0]["id"] == long_id
