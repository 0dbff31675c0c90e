"""Start, stop and inspect a fake upstream in a subprocess, for tests and benchmarks.

Plain functions, no pytest fixtures, so any test module or script can use them.
Standard library only: importing this needs neither Django nor an HTTP client.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_fake_upstream(
    port: int | None = None,
    latency_ms: float = 0,
    *,
    cpu: int | None = None,
    timeout: float = 10.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Spawn ``python -m fakeupstream`` and return (process, base_url) once it answers.

    base_url is the server root, e.g. ``http://127.0.0.1:PORT``: the OpenAI API is
    under ``base_url + "/v1"``, the stats under ``base_url + "/stats"``. With no port a
    free one is picked. ``cpu`` pins the process to that core with taskset. The caller
    stops it with ``stop_fake_upstream(process)``.
    """
    # A picked port can be taken by someone else before the child binds it: pick again.
    attempts = 1 if port else 3
    for _ in range(attempts):
        chosen = port or free_port()
        command = [
            sys.executable,
            "-m",
            "fakeupstream",
            "--host",
            HOST,
            "--port",
            str(chosen),
        ]
        command += ["--latency-ms", str(latency_ms)]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        # stdout only carries the "listening on" line; stderr stays visible for crashes.
        process = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL)
        try:
            if wait_until_answering(process, chosen, timeout=timeout):
                return process, f"http://{HOST}:{chosen}"
        except BaseException:
            stop_fake_upstream(process)
            raise
    raise RuntimeError(
        f"the fake upstream exited with status {process.returncode} before answering"
    )


def wait_until_answering(process: subprocess.Popen[Any], port: int, *, timeout: float) -> bool:
    """True once the server answers, False if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            request("GET", f"http://{HOST}:{port}", "/stats")
            return True
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"the fake upstream did not answer on port {port} within {timeout} s")


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not gone within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_fake_upstream(process: subprocess.Popen[Any]) -> None:
    stop_process(process, timeout=5)


def request(method: str, base_url: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One JSON request to the fake upstream; returns (status, decoded JSON body)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def fake_upstream_stats(base_url: str) -> dict[str, Any]:
    """The counters of ``GET /stats``: requests_total, by_path, by_token,
    by_model, streams_started, streams_completed,
    streams_cancelled, streams_broken, in_flight."""
    return request("GET", base_url, "/stats")[1]


def reset_fake_upstream_stats(base_url: str) -> None:
    request("POST", base_url, "/stats/reset")


def control_fake_upstream(base_url: str, **settings: float) -> dict[str, Any]:
    """Set the runtime config (latency_ms, chunk_delay_ms); no settings resets it."""
    return request("POST", base_url, "/control", settings)[1]
