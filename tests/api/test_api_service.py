"""Everything around /forecast: probes, metadata, model list, metrics, request ids, logs, auth, OpenAPI."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.logs import JsonFormatter, configure_logging, request_id_var, stop_background_writer
from service.api.settings import Settings
from service.model.checkpoint import CONFIG_FILE

BROKEN = {"tampered": "does not match", "foreign": "kind 'gpt'", "garbled": "not valid JSON"}


def test_liveness_and_readiness(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert client.get("/v2").json()["name"] == "odecast"


@pytest.mark.parametrize("default_model", ["tampered", "absent"])
def test_not_ready_when_the_default_model_is_not_loaded(make_client, default_model):
    client = make_client(default_model=default_model)
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    assert client.get("/v2/health/live").status_code == 200
    answer = client.post("/forecast", json={"series": [{"times": [0], "values": [[1, 2]], "at": [1]}]})
    assert answer.status_code == 503
    assert default_model in answer.json()["detail"][0]["msg"]


def test_no_models_at_all(tmp_path):
    with TestClient(create_app(Settings(models_dir=tmp_path, torch_threads=1))) as client:
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/models").json()["models"] == []
        answer = client.post("/forecast", json={"series": [{"times": [0], "values": [1], "at": [1]}]})
        assert answer.status_code == 503


def test_503_before_the_lifespan_has_loaded_models(models_dir):
    client = TestClient(create_app(Settings(models_dir=models_dir, default_model="tiny")))  # no lifespan
    assert client.get("/models").status_code == 503
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/health/live").status_code == 200


def test_model_list_shows_every_checkpoint_and_its_error(client):
    listing = client.get("/models").json()
    assert listing["default_model"] == "tiny"
    assert listing["limits"]["max_series"] == 64
    models = {m["name"]: m for m in listing["models"]}
    assert set(models) == {"tiny", "hourly", "stiff", "digits", "digits-ode", "digits-stiff", *BROKEN}
    tiny = models["tiny"]
    assert tiny["ready"] and tiny["error"] is None and tiny["kind"] == "latent_ode"
    assert tiny["channels"] == ["x", "y"] and tiny["time_unit"] is None and tiny["max_span"] == 10.0
    assert tiny["max_backcast"] == 5.0
    assert tiny["metrics"] == {"val_rmse": 0.5} and len(tiny["version"]) == 12
    assert tiny["value_limits"] == [[-100.0, 100.0], [-199.5, 200.5]]  # mean -+ 100 std per channel
    assert models["hourly"]["time_unit"] == "hours"
    assert models["digits"]["kind"] == "mnist_classifier" and models["digits"]["architecture"] == "mlp"
    assert models["digits"]["channels"] is None
    for name, reason in BROKEN.items():
        assert not models[name]["ready"] and models[name]["version"] is None
        assert reason in models[name]["error"]


def test_a_checkpoint_of_an_unfinished_run_is_served_and_listed_as_unfinished(models_dir, make_client):
    """An interrupted run's checkpoint was listed ready like a finished model, nothing marking it."""
    for name, finished in (("unfinished", False), ("misflagged", "no")):
        shutil.copytree(models_dir / "tiny", models_dir / name)
        config = json.loads((models_dir / name / CONFIG_FILE).read_text())
        (models_dir / name / CONFIG_FILE).write_text(json.dumps({**config, "finished": finished}))
    client = make_client()
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["unfinished"]["ready"] and models["unfinished"]["finished"] is False
    assert models["tiny"]["finished"] is True  # written before the flag existed: a finished run
    assert models["digits"]["finished"] is None
    misflagged = models["misflagged"]
    assert not misflagged["ready"] and "finished must be true or false" in misflagged["error"]
    series = [{"times": [0, 1], "values": [[1, 2], [1, 2]], "at": [2]}]
    answer = client.post("/forecast", json={"model": "unfinished", "series": series})
    assert answer.status_code == 200


def test_oip_model_metadata_and_readiness(client):
    meta = client.get("/v2/models/tiny").json()
    assert meta["name"] == "tiny" and meta["platform"] == "pytorch" and len(meta["versions"][0]) == 12
    # No tensors: a forecaster answers at POST /forecast, and OIP infer refuses it (it had listed
    # FP64 times, values and at that infer then refused).
    assert (meta["inputs"], meta["outputs"]) == ([], [])
    refused = client.post("/v2/models/tiny/infer", json={"inputs": [
        {"name": "times", "datatype": "FP64", "shape": [2], "data": [0.0, 1.0]}]})
    assert refused.status_code == 400 and "served by POST /forecast" in refused.json()["error"]
    assert client.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
    not_ready = client.get("/v2/models/tampered/ready")
    assert (not_ready.status_code, not_ready.json()) == (503, {"name": "tampered", "ready": False})
    failed = client.get("/v2/models/tampered")
    assert failed.status_code == 503 and "does not match" in failed.json()["error"]
    assert len(client.get("/v2/models/" + "x" * 8000).json()["error"]) < 300  # the name is cut, not echoed
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        unknown = client.get(path)
        assert unknown.status_code == 404, unknown.text
        message = unknown.json()["error"]
        assert message.startswith("path.name: unknown model 'nope'; models here: "), message
        assert "digits-ode" in message


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/tiny",
                                  "/v2/models/tiny/ready", "/models", "/metrics"])
def test_head_answers_as_get_without_a_body(client, path):
    got, head = client.get(path), client.head(path)
    assert (head.status_code, head.content) == (got.status_code, b""), path
    assert head.headers["content-type"] == got.headers["content-type"]
    assert client.head("/v2/models/nope").status_code == 404
    refused = client.post(path)
    assert refused.status_code == 405  # and, RFC 9110, Allow names every method (in any order)
    assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_openapi_lists_no_422_where_the_protocol_answers_400(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert ("422" in operation["responses"]) == (path in ("/forecast", "/classify")), (path, method)
    assert "400" in paths["/v2/models/{name}/infer"]["post"]["responses"]


def test_head_is_not_a_second_openapi_operation(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "head" not in paths["/models"] and "get" in paths["/models"]


def test_unknown_route_and_method_use_the_error_shape(client):
    def message(answer, status):
        assert answer.status_code == status, answer.text
        return answer.json()["detail"][0]["msg"]

    assert message(client.get("/nowhere"), 404) == "no endpoint at '/nowhere'; see /docs"
    assert message(client.get("/forecast"), 405) == "'GET' is not allowed on '/forecast'; it takes POST"
    # No redirect (a 307 whose Location follows the client's Host header): a 404 naming the path.
    slashed = client.post("/forecast/", json={}, follow_redirects=False)
    assert "paths end without '/': '/forecast'" in message(slashed, 404)
    assert client.get("/models/", follow_redirects=False).status_code == 404
    assert client.get("/v2/models/tiny/").json()["error"].startswith("no endpoint at '/v2/models/tiny/'")


def test_a_query_parameter_without_a_name_is_refused_as_the_query(client):
    error = client.post("/forecast?=x", json={}).json()["detail"][0]
    assert error["field"] == "query" and error["type"] == "query_not_accepted"


def test_metrics_count_requests_nfe_and_models(client):
    client.get("/v2/health/live")
    client.get("/v2/models/nope/ready")
    client.post("/forecast", json={"series": [{"times": [0, 1], "values": [[1, 2], [2, 3]], "at": [2]}]})
    text = client.get("/metrics").text
    for metric, endpoint, method, status in [("requests_total", "/v2/health/live", "GET", 200),
                                             ("requests_total", "/v2/models/{name}/ready", "GET", 404),
                                             ("request_duration_seconds_count", "/forecast", "POST", 200)]:
        labels = f'endpoint="{endpoint}",method="{method}",status="{status}"'
        assert f"odecast_http_{metric}{{{labels}}} 1.0" in text
    assert 'odecast_solver_nfe_count{model="tiny"} 1.0' in text
    assert 'odecast_models{state="ready"} 6.0' in text and 'odecast_models{state="failed"} 3.0' in text


def test_request_id_is_echoed_or_made(client):
    echoed = client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    made = client.get("/v2/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(made.headers["X-Request-ID"]) == 32 and made.headers["X-Request-ID"] != "bad id\twith spaces"
    assert client.get("/nowhere").headers["X-Request-ID"]


def test_access_log_carries_the_request_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="odecast.access"):
        client.get("/v2/health/live", headers={"X-Request-ID": "trace-me"})
    record = next(r for r in caplog.records if r.name == "odecast.access")
    assert (record.status, record.path) == (200, "/v2/health/live")
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "GET /v2/health/live 200" and line["status"] == 200


def test_json_formatter_carries_the_context_request_id():
    token = request_id_var.set("rid-1")
    try:
        record = logging.makeLogRecord({"name": "x", "levelname": "INFO", "msg": "hi %s", "args": ("there",),
                                        "model": "tiny"})
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "rid-1" and line["message"] == "hi there" and line["model"] == "tiny"


def test_python_warnings_are_json_log_lines(capsys):
    """numpy's RuntimeWarnings (a client's times of 1e300) reached stderr as raw text between JSON lines."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            np.array([1e300]).astype(np.float32)
        stop_background_writer()
    finally:
        stop_background_writer()
        logging.captureWarnings(False)
        root.handlers[:], root.level = handlers, level
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any(line["logger"] == "py.warnings" and "overflow" in line["message"] for line in lines)


def test_readiness_needs_the_default_model_to_be_a_forecaster(make_client, caplog):
    """A classifier as ODECAST_DEFAULT_MODEL was 'ready' while /forecast without a model was a 422."""
    with caplog.at_level(logging.WARNING, logger="odecast.app"):
        client = make_client(default_model="digits", default_classifier="nope")
    assert client.get("/v2/health/ready").status_code == 503
    warned = " | ".join(record.getMessage() for record in caplog.records)
    assert "ODECAST_DEFAULT_MODEL: 'digits' is a mnist_classifier model, not a latent_ode model" in warned
    assert "ODECAST_DEFAULT_CLASSIFIER: no checkpoint is named 'nope'" in warned


def test_background_log_writer_keeps_request_ids_tracebacks_and_every_line(capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        log = logging.getLogger("odecast.test")
        for i in range(200):
            token = request_id_var.set(f"rid-{i}")
            log.info("line %d", i, extra={"index": i})
            request_id_var.reset(token)
        token = request_id_var.set("rid-error")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        request_id_var.reset(token)
        stop_background_writer()  # as the app's shutdown does: everything queued is written
        log.info("after")         # and later lines go straight to stderr
    finally:
        stop_background_writer()
        root.handlers[:], root.level = handlers, level
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    ours = [line for line in lines if line["logger"] == "odecast.test"]
    assert [(line["message"], line["request_id"], line["index"]) for line in ours[:200]] == [
        (f"line {i}", f"rid-{i}", i) for i in range(200)]
    assert ours[200]["request_id"] == "rid-error" and "ValueError: boom" in ours[200]["exception"]
    assert ours[201]["message"] == "after" and ours[201]["request_id"] is None and len(ours) == 202


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic c2VjcmV0"}])
def test_api_key_refusals(make_client, headers):
    client = make_client(api_key="secret")
    for method, path in (("POST", "/forecast"), ("POST", "/classify"), ("GET", "/models"),
                         ("GET", "/v2/models/tiny"), ("POST", "/v2/models/digits/infer")):
        answer = client.request(method, path, headers=headers, json={})
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        message = answer.json()["error"] if path.startswith("/v2/") else answer.json()["detail"][0]["msg"]
        assert "API key" in message
        assert ("'Basic' header is not one" in message) == ("Basic" in headers.get("Authorization", ""))
        if headers and not path.startswith("/v2/"):  # the header that was sent, and wrong
            assert answer.json()["detail"][0]["field"] == f"header.{next(iter(headers))}"


def test_a_probe_does_not_list_the_models_to_a_client_without_the_key(make_client):
    for key, listed in ((None, True), ("secret", False)):
        message = make_client(api_key=key).get("/v2/models/nope/ready").json()["error"]
        assert message.startswith("path.name: unknown model 'nope'") and ("models here" in message) == listed


def test_api_key_accepted_and_probes_stay_open(make_client):
    client = make_client(api_key="secret")
    assert client.get("/models", headers={"X-API-Key": "secret"}).status_code == 200
    assert client.get("/models", headers={"Authorization": "Bearer secret"}).status_code == 200
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/tiny/ready", "/metrics", "/docs",
                 "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_openapi_asks_for_the_api_key_only_when_the_server_has_one(make_client):
    guarded = [("/forecast", "post"), ("/classify", "post"), ("/models", "get"), ("/v2/models/{name}", "get"),
               ("/v2/models/{name}/infer", "post")]
    open_paths = [("/v2/health/live", "get"), ("/v2/health/ready", "get"), ("/v2/models/{name}/ready", "get"),
                  ("/metrics", "get")]
    keyed = make_client(api_key="secret").get("/openapi.json").json()
    assert set(keyed["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    for path, method in guarded:
        assert keyed["paths"][path][method]["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}], path
    for path, method in open_paths:
        assert "security" not in keyed["paths"][path][method], path
    keyless = make_client().get("/openapi.json").json()
    assert "securitySchemes" not in keyless["components"]
    operations = [operation for item in keyless["paths"].values() for operation in item.values()]
    assert operations and not any("security" in operation for operation in operations)


def test_openapi_lists_the_limits_and_an_example(client):
    spec = client.get("/openapi.json").json()
    for name in ("MAX_BODY_BYTES", "MAX_SERIES", "MAX_OBSERVATIONS", "MAX_TIMES", "MAX_SAMPLES"):
        assert f"`{name}`" in spec["info"]["description"]
    request_schema = spec["components"]["schemas"]["ForecastRequest"]
    assert request_schema["examples"][0]["model"] == "spirals"
    assert "413" in spec["paths"]["/forecast"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_openapi_documents_hand_read_bodies(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"ClassifyRequest", "InferRequest", "RequestInput"} <= set(schemas)
    inputs = schemas["InferRequest"]["properties"]["inputs"]
    assert inputs["items"] == {"$ref": "#/components/schemas/RequestInput"}
    content = spec["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert infer["schema"] == {"$ref": "#/components/schemas/InferRequest"}


def test_openapi_examples_work(models_dir, make_client):
    shutil.copytree(models_dir / "tiny", models_dir / "spirals")
    client = make_client()
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    forecast = client.post("/forecast", json=schemas["ForecastRequest"]["examples"][0])
    assert forecast.status_code == 200, forecast.text
    classify = client.post("/classify", json=schemas["ClassifyRequest"]["examples"][0])
    assert classify.status_code == 200, classify.text
    infer = client.post("/v2/models/digits/infer", json=schemas["InferRequest"]["examples"][0])
    assert infer.status_code == 200, infer.text


def test_server_timing_reports_the_model_call(client):
    answer = client.post("/forecast", json={"series": [{"times": [0, 1], "values": [[1, 2]] * 2, "at": [2]}]})
    timings = dict(part.split(";dur=") for part in answer.headers["Server-Timing"].split(", "))
    assert set(timings) == {"model", "app"} and 0 < float(timings["model"]) <= float(timings["app"])
    assert client.get("/v2/health/live").headers["Server-Timing"].startswith("app;dur=")


def test_docs_pages_have_their_own_metric_labels(client):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/nope"):
        client.get(path)
    text = client.get("/metrics").text
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert f'odecast_http_requests_total{{endpoint="{path}",method="GET",status="200"}} 1.0' in text
    assert 'odecast_http_requests_total{endpoint="unmatched",method="GET",status="404"} 1.0' in text
    assert 'endpoint="unmatched",method="GET",status="200"' not in text
