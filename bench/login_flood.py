"""What a flood of wrong passwords does to the gateway's latency.

    .venv/bin/python bench/login_flood.py [--seconds 10]

Embedded mode (SQLite, in-process hot tier) in a temporary directory, the fake upstream,
and for each configuration: steady cache hits on /v1 (4 clients) and /health polls,
first alone, then while 4 clients send 24 wrong passwords each to the login page.
Configurations: one process serving everything, with the sign-in throttle off (as
before it existed) and on; and the gateway and the Django side as separate processes
(COGNITUDE_SERVE), each pinned to a core of its own. Prints p50/p99 of /v1 and
/health for each phase.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from fakeupstream.testing import (  # noqa: E402 (needs the path above)
    HOST,
    free_port,
    start_fake_upstream,
    stop_fake_upstream,
)

PASSWORD = "right-password-for-the-bench"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "flood"}]}


def manage(env: dict[str, str], *arguments: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *arguments], cwd=PROJECT_DIR,
                          env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def provision(env: dict[str, str], upstream: str) -> str:
    manage(env, "migrate", "--noinput")
    manage(env, "create_org", "Bench")
    raw_key = manage(env, "create_api_key", "--org", "bench")
    manage(env, "set_provider", "--org", "bench", "--kind", "openai", "--base-url", upstream,
           "--api-key", "sk-bench-upstream")
    manage(env, "shell", "-c", "from django.contrib.auth import get_user_model; "
           f"get_user_model().objects.create_user('victim', password='{PASSWORD}')")
    return raw_key


def serve(env: dict[str, str], serve: str,
          cpu: int | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    process = subprocess.Popen(
        [*pin, sys.executable, "-m", "uvicorn", "cognitude.asgi:application", "--host", HOST,
         "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
         "--log-level", "warning"],
        cwd=PROJECT_DIR, env={**env, "COGNITUDE_SERVE": serve},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/health", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError("server did not start")


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49] * 1000:6.1f} ms  p99 {cuts[98] * 1000:6.1f} ms  (n={len(samples)})"


def phase(gateway: str, django_side: str, raw_key: str, seconds: float, flood: bool) -> dict:
    stop = threading.Event()
    v1: list[float] = []
    health: list[float] = []
    outcomes: dict[str, int] = {}

    def hits() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {raw_key}"}) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.post(f"{gateway}/v1/chat/completions", json=BODY)
                v1.append(time.perf_counter() - started)
                time.sleep(0.02)

    def probes() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get(f"{gateway}/health")
                health.append(time.perf_counter() - started)
                time.sleep(0.1)

    def wrong_passwords() -> None:
        with httpx.Client() as client:
            page = client.get(f"{django_side}/accounts/login/").text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            for _ in range(24):
                answer = client.post(f"{django_side}/accounts/login/", data={
                    "username": "victim", "password": "wrong", "csrfmiddlewaretoken": token})
                kind = "throttled" if "Too many failed" in answer.text else "refused"
                outcomes[kind] = outcomes.get(kind, 0) + 1
                time.sleep(seconds / 24 / 2)

    threads = [threading.Thread(target=hits) for _ in range(4)]
    threads.append(threading.Thread(target=probes))
    for thread in threads:
        thread.start()
    flooders = [threading.Thread(target=wrong_passwords) for _ in range(4)] if flood else []
    for thread in flooders:
        thread.start()
    time.sleep(seconds)
    for thread in flooders:
        thread.join()
    stop.set()
    for thread in threads:
        thread.join()
    return {"v1": v1, "health": health, "logins": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    upstream_process, upstream = start_fake_upstream(latency_ms=0)
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL",
                             "COGNITUDE_LIMITS_REDIS_URL")}
    with tempfile.TemporaryDirectory() as var:
        env = {**base_env, "COGNITUDE_VAR_DIR": var, "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "1",
               "DJANGO_SETTINGS_MODULE": "cognitude.settings"}
        raw_key = provision(env, f"{upstream}/v1")
        configurations = [
            ("one process, no throttle", {"COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT": "0",
                                          "COGNITUDE_LOGIN_FAILURES_PER_ADDRESS": "0"}, False),
            ("one process, throttle on", {}, False),
            ("separate processes, no throttle", {"COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT": "0",
                                                 "COGNITUDE_LOGIN_FAILURES_PER_ADDRESS": "0"},
             True),
            ("separate processes, throttle on", {}, True),
        ]
        for name, extra, split in configurations:
            processes = []
            # Split: each on a core of its own, as separate containers or hosts would be.
            gateway_process, gateway = serve({**env, **extra}, "gateway" if split else "all",
                                             0 if split else None)
            processes.append(gateway_process)
            django_side = gateway
            if split:
                django_process, django_side = serve({**env, **extra}, "django", 1)
                processes.append(django_process)
            try:
                httpx.post(f"{gateway}/v1/chat/completions", json=BODY,
                           headers={"Authorization": f"Bearer {raw_key}"})  # the miss
                for flood in (False, True):
                    seen = phase(gateway, django_side, raw_key, args.seconds, flood)
                    label = "login flood" if flood else "quiet"
                    print(f"{name:34} {label:11} /v1 {percentiles(seen['v1'])}   "
                          f"/health {percentiles(seen['health'])}   {seen['logins']}",
                          flush=True)
            finally:
                for process in processes:
                    process.terminate()
                    process.wait()
    stop_fake_upstream(upstream_process)


if __name__ == "__main__":
    main()
