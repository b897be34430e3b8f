"""Serving benchmark: POST /forecast over loopback HTTP against the same prediction in-process.

Starts ``odecast serve`` (uvicorn, one process) on 127.0.0.1, sends a typical request (1
series, 50 observations, 100 requested times, 64 samples) and a batch request (32 such series)
with one keep-alive httpx client, and times the same ``Forecaster.predict`` call directly in
Python, without HTTP, alternating the two so both see the same background load. The HTTP
overhead of each request is its latency at the client minus the model call's duration that the
server reports in its ``Server-Timing`` header: everything that is not the model (uvicorn,
loopback, body parsing, validation, response JSON, middleware, threadpool hop). Also measured:
throughput with several concurrent clients.

httpx is the headline client (what a user's Python code would use), but its HTTP handling is
pure Python. In the same alternation the same request is also sent with the standard library's
``http.client`` on its own keep-alive connection, a lean client, so that what the server stack
costs and what the client library costs can be told apart. Both clients serialise the body
the same way (``json.dumps``, compact) inside the timed call.

Each request is also sent, with both clients and in the same alternation, to
``least_server.py``: the least FastAPI server that answers the same forecast the way issue #3
asks (a plain ``def`` route in the threadpool), with no validation, checks, dependencies,
middleware, metrics or logs. Its overhead is what uvicorn, FastAPI, the threadpool hop and
each client cost on this machine for this request; odecast's overhead minus it is what
odecast's own serving code costs (results under ``least_server_*``).

    python benchmarks/serve_forecast.py [--models-dir models] [--model spirals] [--requests 300]

Prints a table and writes benchmarks/results/serve_forecast.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.least_server import queries_from_json  # noqa: E402
from service.api.cpu import available_cpus  # noqa: E402
from service.model.forecaster import Forecaster  # noqa: E402

QUANTILES = [0.05, 0.5, 0.95]
# Per server: latencies with each client, and their overheads (see overhead_summary).
RESULT_KEYS = ("http", "http_stdlib_client", "overhead_ms", "overhead_ms_stdlib_client")


def make_series(rng: np.random.Generator, channels: int, observations: int, times: int) -> dict:
    """Irregular times over [0, 3.7], a few missing values, requested times spanning backcast to forecast."""
    t = np.sort(rng.uniform(0.0, 3.7, observations))
    values = rng.normal(0.0, 1.0, (observations, channels))
    values[rng.random((observations, channels)) < 0.1] = np.nan
    values[np.isnan(values).all(axis=1), 0] = 0.0
    at = np.linspace(-0.5, 7.0, times)
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in values]
    return {"times": t.tolist(), "values": rows, "at": at.tolist()}


def request_body(model: str, series: list[dict], samples: int) -> dict:
    return {"model": model, "series": series, "quantiles": QUANTILES, "num_samples": samples, "seed": 0}


def summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "throughput_rps": float(len(ms) / (ms.sum() / 1000))}


def server_timing(header: str) -> dict[str, float]:
    """The server's own measures (ms): ``model`` call, and ``app`` from request to response start."""
    return {name: float(ms) for name, ms in (part.split(";dur=") for part in header.split(", "))}


def compact_json(body: dict) -> bytes:
    """The body as httpx writes it for ``json=``."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def post_with_httpx(client: httpx.Client, body: dict) -> str:
    """POST /forecast with httpx; returns the Server-Timing header."""
    return client.post("/forecast", json=body).raise_for_status().headers["Server-Timing"]


def post_with_http_client(connection: http.client.HTTPConnection, body: dict) -> str:
    """POST /forecast with the standard library's keep-alive connection; returns Server-Timing."""
    connection.request("POST", "/forecast", body=compact_json(body),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"POST /forecast answered {response.status}")
    return response.getheader("Server-Timing")


def overhead_summary(parts: list[tuple[float, float]]) -> dict[str, float]:
    """Percentiles of (latency - model, app - model) pairs: all overhead, and the server's share."""
    overhead, in_server = np.array(parts).T
    return {"p50": float(np.percentile(overhead, 50)), "p95": float(np.percentile(overhead, 95)),
            "in_server_p50": float(np.percentile(in_server, 50)),
            "client_and_transport_p50": float(np.percentile(overhead - in_server, 50))}


def time_calls(call, count: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def concurrent_throughput(url: str, body: dict, clients: int, seconds: float) -> float:
    done = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal done
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.perf_counter() < stop:
                client.post("/forecast", json=body).raise_for_status()
                with lock:
                    done += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    return done / (time.perf_counter() - started)


def speed_probe() -> float:
    """Median microseconds of a fixed small workload (a 64x64 matmul and an ELU, the shape of the
    served field's arithmetic): this VM runs the same code up to ~1.5x slower from one minute to
    the next, so each run records the probe before and after, to compare runs by."""
    hidden, weight = torch.randn(64, 64), torch.randn(64, 64)
    seconds = time_calls(lambda: torch.nn.functional.elu(hidden @ weight), 2000, warmup=200)
    return float(np.median(seconds) * 1e6)


def start_server(command: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """Start a server whose stderr goes to ``log``; its URL from uvicorn's "running on" line there.

    The log goes straight to a file rather than through a pipe drained by a thread here, so
    that nothing in this process but the timed calls runs while requests are timed (the pipe
    made no difference that a run could tell from noise; the file makes sure).
    """
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stderr=stderr)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"running on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if match:
            return process, match.group(1)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command[1]} did not start (exit {process.wait()}); see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="spirals")
    parser.add_argument("--requests", type=int, default=300, help="timed typical requests")
    parser.add_argument("--batch-requests", type=int, default=40, help="timed batch requests")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput run")
    parser.add_argument("--threads", type=int, default=available_cpus(), help="torch threads, both sides")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_forecast.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    forecaster = Forecaster.load(args.models_dir / args.model)
    rng = np.random.default_rng(0)
    channels = len(forecaster.channels)
    typical = [make_series(rng, channels, 50, 100)]
    batch = [make_series(rng, channels, 50, 100) for _ in range(32)]
    cases = {"typical (1 series x 50 obs, 100 times, 64 samples)": (typical, args.requests),
             "batch (32 such series)": (batch, args.batch_requests)}

    def direct(series: list[dict]):
        queries = queries_from_json(series)
        return lambda: forecaster.predict(queries, quantiles=QUANTILES, num_samples=64, seed=0)

    probe_before = speed_probe()
    server_log = args.out.with_suffix(".server.log")
    server_log.parent.mkdir(parents=True, exist_ok=True)
    servers = {
        "": start_server([sys.executable, "-m", "service.cli", "serve", "--port", "0", "--models-dir",
                          str(args.models_dir)],
                         {"ODECAST_DEFAULT_MODEL": args.model, "ODECAST_TORCH_THREADS": str(args.threads)},
                         server_log),
        "least_server_": start_server([sys.executable, str(ROOT / "benchmarks" / "least_server.py"),
                                       "--models-dir", str(args.models_dir), "--model", args.model,
                                       "--threads", str(args.threads)], {},
                                      args.out.with_suffix(".least_server.log")),
    }
    results: dict = {f"{server}{key}": {} for server in servers for key in RESULT_KEYS}
    results["direct"] = {}
    with contextlib.ExitStack() as stack:
        for process, _ in servers.values():
            stack.callback(process.wait, timeout=60)
            stack.callback(process.terminate)
        # One keep-alive connection per server and client, each request sent from inside the
        # alternation: "http" is httpx, "http_stdlib_client" http.client.
        senders = {}
        for server, (_, url) in servers.items():
            client = stack.enter_context(httpx.Client(base_url=url, timeout=120))
            host, port = url.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=120)
            stack.callback(connection.close)
            senders[f"{server}http"] = functools.partial(post_with_httpx, client)
            senders[f"{server}http_stdlib_client"] = functools.partial(post_with_http_client, connection)
        for name, (series, count) in cases.items():
            body = request_body(args.model, series, 64)
            call_direct = direct(series)
            direct_seconds = []
            http_seconds: dict[str, list[float]] = {side: [] for side in senders}
            parts: dict[str, list[tuple[float, float]]] = {side: [] for side in senders}
            for _ in range(count + 3):  # the first 3 of each are warm-up
                direct_seconds += time_calls(call_direct, 1, warmup=0)
                for side, send in senders.items():
                    started = time.perf_counter()
                    timing = server_timing(send(body))
                    http_seconds[side].append(time.perf_counter() - started)
                    parts[side].append((http_seconds[side][-1] * 1000 - timing["model"],
                                        timing["app"] - timing["model"]))
            results["direct"][name] = summary(direct_seconds[3:])
            for side in senders:
                results[side][name] = summary(http_seconds[side][3:])
                results[side.replace("http", "overhead_ms", 1)][name] = overhead_summary(parts[side][3:])
            print(f"{name}: direct p50 {results['direct'][name]['p50_ms']:.2f} ms, http p50 "
                  f"{results['http'][name]['p50_ms']:.2f} ms (httpx), "
                  f"{results['http_stdlib_client'][name]['p50_ms']:.2f} ms (http.client)", flush=True)
        typical_body = request_body(args.model, typical, 64)
        results["concurrent_rps"] = {f"typical, {args.clients} clients":
                                     concurrent_throughput(servers[""][1], typical_body, args.clients, 10.0)}

    results["setup"] = {
        "command": "python " + " ".join(sys.argv), "model": args.model, "model_version": forecaster.version,
        "torch_threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {available_cpus()} usable",
        "load_average_1m_at_end": os.getloadavg()[0],
        "speed_probe_us": {"before": probe_before, "after": speed_probe()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'case':58s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'req/s':>8s}")
    for side in ("direct", *(f"{server}{key}" for server in servers for key in RESULT_KEYS[:2])):
        for name, row in results[side].items():
            print(f"{side + ': ' + name:58s} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['p99_ms']:8.2f} "
                  f"{row['throughput_rps']:8.1f}")
    for (server, server_name), (key, client_name) in itertools.product(
            (("", "odecast"), ("least_server_", "least server")),
            (("overhead_ms", "httpx"), ("overhead_ms_stdlib_client", "http.client"))):
        for name, overhead in results[server + key].items():
            print(f"HTTP overhead ({server_name}, {client_name}), {name}: p50 {overhead['p50']:.2f} ms "
                  f"(in the server {overhead['in_server_p50']:.2f}, client and transport "
                  f"{overhead['client_and_transport_p50']:.2f}), p95 {overhead['p95']:.2f} ms")
    for name, rps in results["concurrent_rps"].items():
        print(f"throughput, {name}: {rps:.1f} req/s")
    print(f"speed probe (64x64 matmul + ELU): {results['setup']['speed_probe_us']['before']:.1f} us before, "
          f"{results['setup']['speed_probe_us']['after']:.1f} us after")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
