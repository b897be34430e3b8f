"""How long faulty or odd request bodies hold the server, and how big its answer to them is.

Starts ``odecast serve`` (the bundled models) on a free port on 127.0.0.1 and sends each body
below to POST /forecast, while a second client asks ``GET /v2/health/live`` 0.1 s after the
body is sent: the liveness answer's latency shows whether the body held the event loop (every
other request waits while it does). Each body is sent ``--rounds`` times; the medians are
printed and saved. The bodies are those black-box probes found holding the server:

- ``rows``: 100,000 rows of ``[true, true]`` in one series (1.2 MB), an error per cell once;
- ``nested``: 24 lists nested around an object (55 bytes), whose key count once took 2**24 steps;
- ``odd-4mb``: a list of 2,000 items alternating 0 and an object of 2,000 numbers (4 MB), which
  sends the body to the exact search for a repeated key;
- ``repeated-key``: 1,000,000 small objects, then the key ``series`` given a second time (8 MB).

Usage: ``python benchmarks/request_faults.py [--rounds 3] [--out benchmarks/results/request_faults.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

BODIES = {
    "rows": '{"series":[{"times":[0],"values":[' + ",".join(["[true,true]"] * 100_000) + '],"at":[1]}]}',
    "nested": "[" * 24 + '{"a":1}' + "]" * 24,
    "odd-4mb": "[" + ",".join(["0", '{"a":[' + ",".join(["1"] * 2000) + "]}"] * 1000) + "]",
    "repeated-key": '{"series":[' + ",".join(['{"a":1}'] * 1_000_000) + '],"series":[]}',
}


def start_server() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", "0"], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "ODECAST_TORCH_THREADS": "1"})
    for line in process.stderr:
        match = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
            return process, match.group(1)
    raise RuntimeError("the server did not start")


def one_round(url: str, body: bytes) -> dict[str, float]:
    answer: dict[str, float] = {}

    def send() -> None:
        started = time.perf_counter()
        response = httpx.post(url + "/forecast", content=body, timeout=600,
                              headers={"Content-Type": "application/json"})
        answer.update(status=response.status_code, seconds=time.perf_counter() - started,
                      answer_bytes=len(response.content))

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.1)
    started = time.perf_counter()
    httpx.get(url + "/v2/health/live", timeout=600)
    answer["liveness_seconds"] = time.perf_counter() - started
    sender.join()
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "request_faults.json"))
    args = parser.parse_args()
    process, url = start_server()
    results = {}
    try:
        for name, text in BODIES.items():
            body = text.encode()
            rounds = [one_round(url, body) for _ in range(args.rounds)]
            results[name] = {"body_bytes": len(body), "status": rounds[0]["status"],
                             **{key: statistics.median(r[key] for r in rounds)
                                for key in ("seconds", "answer_bytes", "liveness_seconds")}}
            row = results[name]
            print(f"{name:13s} {row['body_bytes']:>10,} B -> {row['status']} in {row['seconds']:.3f} s, "
                  f"{row['answer_bytes']:,.0f} B; liveness meanwhile {row['liveness_seconds']:.3f} s")
    finally:
        process.terminate()
        process.wait(timeout=30)
    setup = {"machine": platform.machine(), "python": platform.python_version(), "rounds": args.rounds,
             "command": "python benchmarks/request_faults.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps({"setup": setup, "bodies": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
