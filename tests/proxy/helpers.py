"""Small helpers for driving the live gateway the way an application does."""

import time

import openai

from caching.models import CacheEntry


def client_for(gateway_url: str, raw_key: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=raw_key, max_retries=0,
                         **kwargs)


def ask(client: openai.OpenAI, content: str, *, extra_headers: dict | None = None, **params):
    """One chat completion; returns (parsed completion, response headers)."""
    raw = client.chat.completions.with_raw_response.create(
        model=params.pop("model", "gpt-4o-mini"),
        messages=[{"role": "user", "content": content}],
        extra_headers=extra_headers,
        **params,
    )
    return raw.parse(), raw.headers


def wait_for_entries(org, count: int, *, timeout: float = 5.0) -> list[CacheEntry]:
    """The org's cold-tier entries once there are `count` (written asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = list(CacheEntry.objects.filter(organization=org))
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.02)
