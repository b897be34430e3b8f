"""The real thing: ``odecast serve`` (uvicorn) on 127.0.0.1, called over HTTP with httpx."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

STARTUP_SECONDS = 180  # a hang guard, not a timing target: a loaded CI machine can be slow


@pytest.fixture
def server_env() -> dict[str, str]:
    """More environment for the server; a test overrides it by parametrizing ``server_env``."""
    return {}


@pytest.fixture
def server(models_dir, server_env):
    """Start ``odecast serve --port 0``; yield (base URL, the JSON log lines so far)."""
    env = {**os.environ, "ODECAST_DEFAULT_MODEL": "tiny", "ODECAST_TORCH_THREADS": "1", **server_env}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", "0",
         "--models-dir", str(models_dir)],
        stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    seen: list[dict] = []

    def read_logs(until: float) -> None:
        while time.monotonic() < until:
            try:
                seen.append(json.loads(lines.get(timeout=0.1)))
            except queue.Empty:
                return

    deadline = time.monotonic() + STARTUP_SECONDS
    url = None
    while url is None and time.monotonic() < deadline and process.poll() is None:
        try:
            entry = json.loads(lines.get(timeout=0.5))
        except queue.Empty:
            continue
        seen.append(entry)
        match = re.search(r"running on (http://127\.0\.0\.1:\d+)", entry["message"])
        url = match.group(1) if match else None
    def stop() -> None:
        """Stop the server as a process manager does (SIGTERM); read its log to the end."""
        process.terminate()
        process.wait(timeout=30)
        read_logs(time.monotonic() + 5)

    try:
        assert url, f"server did not start; log: {seen}"
        yield url, seen, lambda: read_logs(time.monotonic() + 2), stop
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def test_served_over_http(server):
    url, logs, drain, stop = server
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v2/health/ready").json() == {"ready": True}
        answer = client.post("/forecast", headers={"X-Request-ID": "live-1"}, json={
            "series": [{"times": [0, 1, 2], "values": [[1, 0], [0, 1], [None, 0.5]], "at": [3, 0.5]}]})
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Request-ID"] == "live-1"
        assert answer.json()["forecasts"][0]["kind"] == ["extrapolation", "interpolation"]
        assert client.post("/forecast", json={"series": []}).status_code == 422
    drain()
    assert any(entry.get("message", "").startswith("models loaded") and "tampered" in entry["failed"]
               for entry in logs)
    access = [entry for entry in logs
              if entry["logger"] == "odecast.access" and entry["request_id"] == "live-1"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/forecast"


def test_every_log_line_is_written_when_the_server_stops(server):
    """Lines are written by a background thread while serving; stopping must not lose any."""
    url, logs, _, stop = server
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(20):
            assert client.get("/v2/health/live", headers={"X-Request-ID": f"stop-{i}"}).status_code == 200
    stop()
    ids = [entry["request_id"] for entry in logs if entry["logger"] == "odecast.access"]
    assert ids == [f"stop-{i}" for i in range(20)]
    assert logs[-1]["message"].startswith("Finished server process")


def send_part_of_a_body(url: str, request_id: str) -> socket.socket:
    address = urlsplit(url)
    connection = socket.create_connection((address.hostname, address.port), timeout=30)
    connection.sendall(f"POST /forecast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"X-Request-ID: {request_id}\r\nContent-Length: 100\r\n\r\n{{\"series\"".encode())
    return connection


@pytest.mark.parametrize("server_env", [{"ODECAST_BODY_TIMEOUT_S": "0.5"}])
def test_short_bodies_time_out_or_count_as_client_disconnects(server):
    url, logs, drain, _ = server
    with send_part_of_a_body(url, "slow") as connection:
        answer = b"".join(iter(lambda: connection.recv(65536), b"")).decode()  # to the close
    assert answer.startswith("HTTP/1.1 408 ") and "body_timeout" in answer
    send_part_of_a_body(url, "gone").close()
    time.sleep(0.5)
    drain()
    statuses = {entry["request_id"]: entry["status"] for entry in logs if entry["logger"] == "odecast.access"}
    assert statuses["slow"] == 408 and statuses["gone"] == 499
    assert not [entry for entry in logs if entry["logger"] == "odecast.error"]
    metrics = httpx.get(url + "/metrics").text
    assert 'endpoint="/forecast",method="POST",status="499"} 1.0' in metrics and 'status="500"' not in metrics


def test_a_header_of_digits_that_are_not_ascii_is_a_400(server):
    """uvicorn reads header bytes as latin-1, where "\\xb2" is "²": str.isdigit() takes it and
    int() does not (that was a 500). The TestClient sends headers as UTF-8, so this needs the
    real server."""
    url, logs, drain, _ = server
    address = urlsplit(url)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                   "data": [0.0] * 784}]}).encode()
    for declared in (b"\xb2", b"1\xb9"):
        with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
            connection.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                               b"Inference-Header-Content-Length: %s\r\n\r\n%s" % (len(body), declared, body))
            answer = b"".join(iter(lambda: connection.recv(65536), b"")).decode("latin-1")
        assert answer.startswith("HTTP/1.1 400 ") and "Inference-Header-Content-Length" in answer, answer
    drain()
    assert not [entry for entry in logs if entry["logger"] == "odecast.error"]
