"""Driving the gateway's limits the way clients meet them."""

import asyncio
import contextlib
import threading
import time
from datetime import date
from decimal import Decimal

import httpx

from analytics.models import ModelPrice, RequestLog
from ratelimit.services import Actor, budget_set, limit_set
from tests.workers import wait_until

ACTOR = Actor(label="tests")
CHAT = "/v1/chat/completions"


def set_limits(tenant, *, api_key=None, model="", **values):
    return limit_set(organization=tenant.org, api_key=api_key, model=model, values=values,
                     actor=ACTOR)


def set_budget(tenant, usd: str, *, period="day", soft=False, api_key=None):
    return budget_set(organization=tenant.org, api_key=api_key, period=period,
                      limit_usd=Decimal(usd), soft=soft, actor=ACTOR)


def set_price(model: str, *, input_per_million: str, output_per_million: str) -> None:
    """The only price of `model` (the data migration's rows do not survive a live test)."""
    ModelPrice.objects.filter(model=model).delete()
    ModelPrice.objects.create(model=model, input_per_million=Decimal(input_per_million),
                              output_per_million=Decimal(output_per_million),
                              effective_from=date(2000, 1, 1))


def chat(content: str, **params) -> dict:
    return {"model": params.pop("model", "gpt-4o-mini"),
            "messages": [{"role": "user", "content": content}], **params}


def post(url: str, key: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(url + CHAT, json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


async def _burst(urls: list[str], key: str, bodies: list[dict],
                 headers: dict) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies) + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(*(
            client.post(urls[i % len(urls)] + CHAT, json=body,
                        headers={"Authorization": f"Bearer {key}", **headers})
            for i, body in enumerate(bodies)))


def burst(url: str | list[str], key: str, bodies: list[dict],
          **headers) -> list[httpx.Response]:
    """Send every body at once (one connection each; to several gateways in turn); the
    answers, in order."""
    return asyncio.run(_burst([url] if isinstance(url, str) else url, key, bodies, headers))


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    found: dict[int, int] = {}
    for response in responses:
        found[response.status_code] = found.get(response.status_code, 0) + 1
    return found


def records_of(org, count: int, *, timeout: float = 10.0) -> list[RequestLog]:
    """The organization's request records once there are `count` (written in batches)."""
    return wait_until(lambda: (logs if len(logs := list(RequestLog.objects.filter(
        organization=org))) >= count else None), timeout=timeout, what=f"{count} records")


@contextlib.contextmanager
def peak_in_flight(fake_upstream):
    """The most requests the fake upstream had in flight at once while the block ran
    (polled every 10 ms): `[peak]`, read after the block."""
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], fake_upstream.stats()["in_flight"])
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield peak
    finally:
        done.set()
        watcher.join()
