"""POST /classify (JSON and PNG/JPEG uploads) and the OIP v2 infer path, on tiny real classifiers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

DIGIT = np.zeros((28, 28))
DIGIT[5:23, 13:16] = 1.0     # a "1"
DIGIT[5:8, 10:13] = 0.6


def image_list(pixels=DIGIT):
    return np.asarray(pixels).tolist()


def refusal(answer, status=422):
    assert answer.status_code == status, answer.text
    return answer.json()["detail"][0]


def png_of_a_digit(size=(90, 120), fmt="PNG") -> bytes:
    """Dark ink on white paper, larger than 28x28, off-centre: what a phone or canvas gives."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).line([(50, 15), (55, 100)], fill="black", width=9)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_json_image_answer(client):
    answer = client.post("/classify", json={"image": image_list()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "digits" and len(body["model_version"]) == 12
    (prediction,) = body["predictions"]
    probabilities = np.array(prediction["probabilities"])
    assert probabilities.shape == (10,) and abs(probabilities.sum() - 1) < 1e-5 and (probabilities >= 0).all()
    assert prediction["label"] == int(probabilities.argmax()) and prediction["nfe"] == 0


def test_0_255_integers_mean_the_same_as_0_1_floats(client):
    as_floats = client.post("/classify", json={"image": image_list(np.round(DIGIT * 255) / 255)}).json()
    as_bytes = client.post("/classify", json={"image": image_list(np.round(DIGIT * 255).astype(int))}).json()
    np.testing.assert_allclose(as_bytes["predictions"][0]["probabilities"],
                               as_floats["predictions"][0]["probabilities"], rtol=1e-6)


def test_dark_ink_on_white_is_inverted_as_uploads_are(client):
    """A JSON image on a light background was classified as it came: confidently wrong."""
    on_black = client.post("/classify", json={"image": image_list()}).json()
    on_white = client.post("/classify", json={"image": image_list(255 - np.round(DIGIT * 255))}).json()
    np.testing.assert_allclose(on_white["predictions"][0]["probabilities"],
                               on_black["predictions"][0]["probabilities"], atol=1e-5)


def test_float_rounding_above_1_is_read_as_1(client):
    rounded = client.post("/classify", json={"image": image_list(np.where(DIGIT == 1.0, 1.0000001, DIGIT))})
    assert rounded.status_code == 200, rounded.text
    exact = client.post("/classify", json={"image": image_list()}).json()
    assert rounded.json()["predictions"] == exact["predictions"]


def test_a_batch_answers_each_image_as_alone(client):
    other = np.roll(DIGIT, 4, axis=1)
    batch = client.post("/classify", json={"images": [image_list(other), image_list()]}).json()
    alone = client.post("/classify", json={"image": image_list()}).json()
    assert len(batch["predictions"]) == 2
    np.testing.assert_allclose(batch["predictions"][1]["probabilities"],
                               alone["predictions"][0]["probabilities"], rtol=1e-5)


def test_a_solve_that_hits_the_step_cap_is_a_422_on_both_routes(client):
    """It was a 500: only /forecast caught the solver's step-limit error."""
    error = refusal(client.post("/classify", json={"model": "digits-stiff", "image": image_list()}))
    assert error["type"] == "solver_step_limit" and "gave up (max_num_steps" in error["msg"], error
    infer = client.post("/v2/models/digits-stiff/infer", json=infer_body(DIGIT.ravel().tolist(), [1, 784]))
    assert infer.status_code == 400 and "gave up (max_num_steps" in infer.json()["error"], infer.text


def test_an_ode_net_reports_its_nfe(client):
    answer = client.post("/classify", json={"model": "digits-ode", "images": [image_list()] * 2}).json()
    assert all(p["nfe"] > 0 for p in answer["predictions"])


def test_png_and_jpeg_uploads(client):
    png = client.post("/classify", files={"file": ("digit.png", png_of_a_digit(), "image/png")})
    assert png.status_code == 200, png.text
    assert len(png.json()["predictions"][0]["probabilities"]) == 10
    several = client.post("/classify", data={"model": "digits-ode"}, files=[
        ("file", ("a.png", png_of_a_digit(), "image/png")),
        ("file", ("b.jpg", png_of_a_digit((300, 200), "JPEG"), "image/jpeg"))])
    assert several.status_code == 200, several.text
    assert several.json()["model"] == "digits-ode" and len(several.json()["predictions"]) == 2


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"image": image_list()[:27]}, "image", "at least 28"),
    ({"image": [row + [0.0] for row in image_list()]}, "image[0]", "at most 28"),
    ({"images": []}, "images", "at least 1"),
    ({}, "body", "neither"),
    ({"image": image_list(), "images": [image_list()]}, "body", "both"),
    ({"image": image_list(np.where(DIGIT > 0, -0.5, 0))}, "image[5][10]", "out of range"),
    ({"image": image_list(np.where(DIGIT > 0, 300, 0))}, "image[5][10]", "0 to 255"),
    ({"images": [image_list(), image_list(np.where(DIGIT > 0, 127.5, 0))]}, "images[1][5][10]",
     "whole numbers"),
    # the message names the pixel that made the image 0..255, not only a normal one it then refuses
    ({"image": [*image_list()[:20], [0] * 20 + [200] + [0] * 7, *image_list()[21:]]}, "image[5][10]",
     "0.6 is not a whole number: the image is read as 0..255, whole numbers from 0 to 255, because "
     "image[20][20] is 200.0 (above 1)"),
    ({"image": image_list(), "size": 3}, "size", "Extra inputs"),
    ({"image": [[10**400] + row[1:] for row in image_list()]}, "image[0][0]", "finite number"),
    ({"image": [[True] + row[1:] for row in image_list()]}, "image[0][0]", "valid number"),
    ({"image": [["0"] + row[1:] for row in image_list()]}, "image[0][0]", "valid number"),
    ({"model": "tiny", "image": image_list()}, "model",
     "is a latent_ode model, served by POST /forecast; this endpoint needs a mnist_classifier"),
    ({"model": "", "image": image_list()}, "model", "at least 1 character"),
])
def test_json_refusals(client, body, field, words):
    error = refusal(client.post("/classify", json=body))
    assert error["field"] == field and words in error["msg"], error


def test_non_finite_pixels_and_broken_json(client):
    text = json.dumps({"image": image_list()}).replace("0.6", "NaN", 1)
    error = refusal(client.post("/classify", content=text, headers={"Content-Type": "application/json"}))
    assert error["field"] == "image[5][10]" and "finite" in error["msg"]
    broken = refusal(client.post("/classify", content=b'{"image": [',
                                 headers={"Content-Type": "application/json"}))
    assert broken["field"] == "body" and broken["msg"].startswith("invalid JSON")


@pytest.mark.parametrize(("files", "data", "field", "words"), [
    ({"file": ("x.png", b"hello", "image/png")}, None, "file", "not a PNG or JPEG"),
    ({"file": ("x.png", b"", "image/png")}, None, "file", "empty"),
    ({"file": ("x.png", png_of_a_digit((40, 40))[:60], "image/png")}, None, "file", "corrupt"),
    ({"other": ("x.png", png_of_a_digit(), "image/png")}, None, "other", "unknown form field"),
    ({"file": ("x.png", png_of_a_digit(), "image/png")}, {"model": "nope"}, "model", "unknown model"),
    ({"file": ("x.png", png_of_a_digit(), "image/png")}, {"model": ""}, "model", "non-empty"),
])
def test_upload_refusals(client, files, data, field, words):
    answer = client.post("/classify", files=files, data=data)
    assert answer.status_code in (404, 422), answer.text
    error = answer.json()["detail"][0]
    assert error["field"] == field and words in error["msg"], error


def test_multipart_faults_name_the_field(make_client):
    client = make_client(max_images=2)
    files = [("file", (f"{i}.png", png_of_a_digit(), "image/png")) for i in range(4)]
    error = refusal(client.post("/classify", files=files))
    assert (error["field"], error["type"]) == ("file", "over_limit") and "limit is 2" in error["msg"], error
    for content_type, body in [("multipart/form-data", b"abc"),
                               ("multipart/form-data; boundary=XX", b"garbage"),
                               ("multipart/form-data; boundary=XX", b"--XX\r\nnonsense\r\n\r\n--XX--\r\n")]:
        error = refusal(client.post("/classify", content=body, headers={"Content-Type": content_type}))
        assert error["field"] == "body" and "multipart" in error["msg"], error
    error = refusal(client.post("/classify", data={"model": "digits", "a": "1", "b": "2"}, files=files[:1]))
    assert error["field"] == "body" and "text fields" in error["msg"], error


def test_multipart_content_type_is_case_insensitive(client):
    files = {"file": ("d.png", png_of_a_digit(), "image/png")}
    request = client.build_request("POST", "/classify", files=files)
    content_type = request.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    answer = client.post("/classify", content=request.read(), headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8",
                                          "application/vnd.api+json"])
def test_json_content_types_and_a_byte_order_mark_as_forecast_reads_them(client, content_type):
    body = json.dumps({"image": image_list()}).encode()
    for raw in (body, b"\xef\xbb\xbf" + body):
        answer = client.post("/classify", content=raw, headers={"Content-Type": content_type})
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_415_naming_the_header(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client.post("/classify", content=json.dumps({"image": image_list()}), headers=headers)
    error = refusal(answer, 415)
    assert error["field"] == "header.Content-Type" and "application/json" in error["msg"], error


def test_an_unreadable_image_is_named_without_internals(client):
    fake = png_of_a_digit()[:8] + bytes(100)  # a PNG signature, then nothing Pillow can identify
    files = [("file", ("good.png", png_of_a_digit(), "image/png")), ("file", ("fake.png", fake, "image/png"))]
    error = refusal(client.post("/classify", files=files))
    assert error["field"] == "file[1]" and "0x" not in error["msg"], error
    assert error["msg"].startswith("'fake.png': not a PNG or JPEG image"), error


@pytest.mark.parametrize("blank", [np.zeros((28, 28)), np.full((28, 28), 255), np.full((28, 28), 0.05)])
def test_a_blank_json_image_is_refused_as_a_blank_upload_is(client, blank):
    error = refusal(client.post("/classify", json={"images": [image_list(), image_list(blank)]}))
    assert (error["field"], error["type"]) == ("images[1]", "image_empty"), error
    assert "no digit" in error["msg"], error


def test_blank_upload_and_missing_file(client):
    blank = io.BytesIO()
    Image.new("L", (50, 50), 255).save(blank, format="PNG")
    error = refusal(client.post("/classify", files={"file": ("blank.png", blank.getvalue(), "image/png")}))
    assert "no digit" in error["msg"]
    error = refusal(client.post("/classify", files={"model": (None, "digits")}))  # multipart, no file part
    assert error["field"] == "file" and error["msg"].startswith("missing"), error


def test_classify_limits(make_client):
    client = make_client(max_images=2, max_body_bytes=20_000)
    error = refusal(client.post("/classify", json={"images": [image_list()] * 3}))
    assert error["field"] == "images" and error["type"] == "over_limit"
    files = [("file", (f"{i}.png", png_of_a_digit(), "image/png")) for i in range(3)]
    assert refusal(client.post("/classify", files=files))["type"] == "over_limit"
    too_big = client.post("/classify", files={"file": ("big.png", b"\x89PNG" + b"0" * 30_000, "image/png")})
    assert too_big.status_code == 413


def test_no_classifier_loaded_is_503(make_client):
    client = make_client(default_classifier="mnist-odenet")
    assert refusal(client.post("/classify", json={"image": image_list()}), 503)["field"] == "model"


# --- Open Inference Protocol v2 -------------------------------------------------------------------------

def infer_body(data, shape, **extra):
    return {"id": "req-7", "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}],
            **extra}


def test_oip_metadata_of_the_classifier(client):
    meta = client.get("/v2/models/digits").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]


def test_oip_infer_json_matches_classify(client):
    classified = client.post("/classify", json={"image": image_list()}).json()
    reference = classified["predictions"][0]["probabilities"]
    flat = client.post("/v2/models/digits/infer", json=infer_body(DIGIT.ravel().tolist(), [1, 784]))
    assert flat.status_code == 200, flat.text
    bom_body = b"\xef\xbb\xbf" + json.dumps(infer_body(DIGIT.ravel().tolist(), [1, 784])).encode()
    with_bom = client.post("/v2/models/digits/infer", content=bom_body,
                           headers={"Content-Type": "application/json"})
    assert with_bom.json() == flat.json(), with_bom.text
    body = flat.json()
    assert body["model_name"] == "digits" and body["id"] == "req-7" and body["parameters"]["nfe"] == 0
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [1, 10]
    np.testing.assert_allclose(output["data"], reference, rtol=1e-5)
    nested = client.post("/v2/models/digits/infer", json=infer_body([[image_list()]] * 2, [2, 1, 28, 28],
                                                                    outputs=[{"name": "probabilities"}]))
    assert nested.status_code == 200 and nested.json()["outputs"][0]["shape"] == [2, 10]
    assert "id" not in client.post("/v2/models/digits/infer", json={
        "inputs": infer_body(DIGIT.ravel().tolist(), [1, 784])["inputs"]}).json()


def test_oip_infer_binary_tensor_extension_as_tritonclient_sends_it(client):
    """tritonclient's default: JSON header, then raw little-endian FP32, no Content-Type."""
    images = np.stack([DIGIT, np.roll(DIGIT, 3, axis=0)]).astype("<f4")[:, None]
    header = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    answer = client.post("/v2/models/digits/infer", content=header + images.tobytes(),
                         headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 200, answer.text
    as_json = client.post("/v2/models/digits/infer", json=infer_body(images.ravel().tolist(), [2, 1, 28, 28]))
    assert answer.json()["outputs"] == as_json.json()["outputs"]


@pytest.mark.parametrize(("body", "message"), [
    (infer_body(DIGIT.ravel().tolist(), [1, 27, 28]), "inputs[0].shape: [1, 27, 28]; expected"),
    (infer_body(DIGIT.ravel().tolist(), [0, 784]), "inputs[0].shape"),
    ({"inputs": [{**infer_body([0.0] * 784, [1, 784])["inputs"][0], "datatype": "INT32"}]},
     "inputs[0].datatype: 'INT32'; the input is FP32"),
    ({"inputs": [{**infer_body([0.0] * 784, [1, 784])["inputs"][0], "name": "x"}]}, "unknown input 'x'"),
    ({"inputs": infer_body([0.0] * 784, [1, 784])["inputs"] * 2}, "inputs: 2 input tensors"),
    (infer_body([0.0] * 700, [1, 784]), "inputs[0].data: 700 values; shape [1, 784] needs 784"),
    (infer_body([0.0] * 784 + [2.0] + [0.0] * 783, [2, 784]),
     "inputs[0].data[784]: 2.0 (image 1) is outside [0, 1]"),
    (infer_body([[0.0] * 784, [0.0]], [2, 784]), "inputs[0].data: not a (nested) list"),
    (infer_body(None, [1, 784]), "inputs[0].data: missing"),
    (infer_body([0.0] * 784, [1, 784], outputs=[{"name": "logits"}]),
     "outputs[0].name: unknown output 'logits'"),
    ({"inputs": "x"}, "inputs: Input should be a valid array"),
    (infer_body([0.0] * 784, ["1", "784"]), "inputs[0].shape[0]: Input should be a valid integer"),
    (infer_body([0.0] * 784, [1.0, 784.0]), "inputs[0].shape[0]: Input should be a valid integer"),
    (infer_body([0.0] * 783 + [10**400], [1, 784]), "inputs[0].data[783]: an integer of 401 digits"),
    (infer_body([True] + [0.0] * 783, [1, 784]), "inputs[0].data[0]: a boolean is not a number"),
    (infer_body([[0.0] * 784, ["0"] + [0.0] * 783], [2, 784]), "inputs[0].data[784]: a string is not"),
    (infer_body([None] + [0.0] * 783, [1, 784]), "inputs[0].data[0]: null is not a number"),
    (infer_body([[0.0] * 783 + [[0.0]]], [1, 784]), "inputs[0].data: not a (nested) list of numbers"),
])
def test_oip_infer_refusals_are_400_naming_the_field(client, body, message):
    answer = client.post("/v2/models/digits/infer", json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"], answer.json()


def test_oip_infer_other_refusals(make_client):
    client = make_client(max_images=2)
    too_many = client.post("/v2/models/digits/infer", json=infer_body([0.0] * 3 * 784, [3, 784]))
    assert too_many.status_code == 400 and "limit is 2" in too_many.json()["error"]
    unknown = client.post("/v2/models/nope/infer", json=infer_body([0.0] * 784, [1, 784]))
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["error"]
    forecaster = client.post("/v2/models/tiny/infer", json=infer_body([0.0] * 784, [1, 784]))
    assert forecaster.status_code == 400 and "needs a mnist_classifier model" in forecaster.json()["error"]
    garbled = client.post("/v2/models/digits/infer", content=b"{",
                          headers={"Content-Type": "application/json"})
    assert garbled.status_code == 400 and garbled.json()["error"].startswith("body: invalid JSON")
    gzipped = client.post("/v2/models/digits/infer", content=b"x", headers={"Content-Encoding": "gzip"})
    assert gzipped.status_code == 400 and "Content-Encoding" in gzipped.json()["error"]
    header = json.dumps(infer_body(None, [1, 784])).encode()
    wrong_size = client.post("/v2/models/digits/infer", content=header + b"\0" * 16,
                             headers={"Inference-Header-Content-Length": str(len(header))})
    assert wrong_size.status_code == 400 and "16 bytes follow the JSON header, but no input declares" in (
        wrong_size.json()["error"])
    missing = client.post("/v2/models/digits/infer", content=header)
    assert missing.status_code == 400 and "inputs[0].data: missing" in missing.json()["error"]
    both = json.dumps({"inputs": [{**infer_body([0.5] * 784, [1, 784])["inputs"][0],
                                   "parameters": {"binary_data_size": 3136}}]}).encode()
    ambiguous = client.post("/v2/models/digits/infer", content=both + b"\0" * 3136,
                            headers={"Inference-Header-Content-Length": str(len(both))})
    assert ambiguous.status_code == 400 and "inputs[0].data: given beside binary data" in (
        ambiguous.json()["error"])
    for size in (3136.0, "3136", True):
        sized = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                        "parameters": {"binary_data_size": size}}]}).encode()
        fractional = client.post("/v2/models/digits/infer", content=sized + b"\0" * 3136,
                                 headers={"Inference-Header-Content-Length": str(len(sized))})
        assert fractional.status_code == 400
        expected = f"binary_data_size: {json.dumps(size)} must be an integer"
        assert expected in fractional.json()["error"], fractional.text
    lying = client.post("/v2/models/digits/infer", content=header,
                        headers={"Inference-Header-Content-Length": "99999"})
    assert lying.status_code == 400 and "Inference-Header-Content-Length" in lying.json()["error"]


def test_forecast_refuses_a_classifier(client):
    answer = client.post("/forecast", json={"model": "digits", "series": [
        {"times": [0], "values": [[1, 2]], "at": [1]}]})
    error = refusal(answer)
    assert error["field"] == "model" and ("served by POST /classify and POST /v2/models/{name}/infer; this "
                                          "endpoint needs a latent_ode model") in error["msg"]
