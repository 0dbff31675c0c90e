"""What a routed request leaves in its record: the provider and model that answered,
the attempts and why the failed ones failed, costs priced on the model that answered,
and the analytics breakdown by provider."""

import time
from datetime import date
from decimal import Decimal

import httpx
import pytest

from analytics.models import ModelPrice, RequestLog
from analytics.prices import PriceBook
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.proxy.failing import FailingUpstream
from tests.proxy.routes import add_provider, chat, set_route

pytestmark = pytest.mark.django_db(transaction=True)


def records_of(org, count: int, *, timeout: float = 5.0) -> list[RequestLog]:
    deadline = time.monotonic() + timeout
    while True:
        logs = list(RequestLog.objects.filter(organization=org).order_by("created_at"))
        if len(logs) >= count or time.monotonic() > deadline:
            return logs
        time.sleep(0.02)


@pytest.fixture
def failing():
    upstream = FailingUpstream()
    yield upstream
    upstream.stop()


def test_it_records_the_way_a_request_went(gateway, live_world, fake_upstream, failing):
    # Prices of its own: a live test's flush leaves the table empty for the next one.
    for model, input_price in (("gpt-4o", "2.50"), ("gpt-4o-mini", "0.15")):
        ModelPrice.objects.get_or_create(model=model, effective_from=date(2024, 1, 1),
                                         defaults={"input_per_million": Decimal(input_price),
                                                   "output_per_million": Decimal("1")})
    org = live_world.a.org
    primary = add_provider(org, "primary", failing.api_base)
    backup = add_provider(org, "backup", fake_upstream.api_base)
    set_route(org, "smart", (primary, "gpt-4o"), (backup, "gpt-4o-mini"))
    failing.mode = "500"

    fell_back = chat(gateway.url, live_world.a.raw_key, "smart", "record the way")
    hit = chat(gateway.url, live_world.a.raw_key, "smart", "record the way")
    direct = chat(gateway.url, live_world.a.raw_key, "gpt-4o", "no route")
    miss, hit_log, direct_log = records_of(org, 3)

    assert hit.headers["x-cognitude-cache"] == "HIT"
    assert direct_log.request_id == direct.headers["x-request-id"]
    assert miss.request_id == fell_back.headers["x-request-id"]
    assert (miss.provider, miss.model_requested, miss.model_used) == (
        "backup", "smart", "gpt-4o-mini")
    assert (miss.attempts, miss.fallback) == (2, "primary:gpt-4o=500")
    assert (hit_log.provider, hit_log.attempts, hit_log.fallback) == ("", 0, "")
    assert hit_log.model_used == "gpt-4o-mini"  # the model that made the cached answer
    assert (direct_log.provider, direct_log.model_used, direct_log.attempts) == (
        "default", "gpt-4o", 1)
    # Priced on gpt-4o-mini, the model that answered ("smart" has no price of its own).
    prices = PriceBook.load()
    mini = prices.price_for("gpt-4o-mini", miss.created_at)
    big = prices.price_for("gpt-4o", miss.created_at)
    assert miss.cost == mini.cost(miss.prompt_tokens, miss.completion_tokens)
    assert miss.cost != big.cost(miss.prompt_tokens, miss.completion_tokens)
    assert hit_log.saved_cost == miss.cost


def test_it_breaks_usage_down_by_provider(gateway, live_world, fake_upstream):
    org = live_world.a.org
    other = add_provider(org, "other", fake_upstream.api_base)
    set_route(org, "elsewhere", (other, "gpt-4o-mini"))
    for n in range(2):
        chat(gateway.url, live_world.a.raw_key, "elsewhere", f"to the other one {n}")
    chat(gateway.url, live_world.a.raw_key, "gpt-4o-mini", "to the default")
    records_of(org, 3)

    rows = httpx.get(f"{gateway.url}/api/analytics/breakdown", params={"by": "provider"},
                     headers={"Authorization": f"Bearer {live_world.a.raw_key}"},
                     timeout=10).json()["data"]

    assert [(row["key"], row["requests"]) for row in rows] == [("other", 2), ("default", 1)]


def test_it_records_the_skipped_targets_of_a_request_no_target_could_answer(
        live_world, failing):
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_BREAKER_FAILURES": "1"})
    try:
        org = live_world.a.org
        only = add_provider(org, "only", failing.api_base)
        set_route(org, "smart", (only, "gpt-4o"))
        failing.mode = "502"
        chat(gateway.url, live_world.a.raw_key, "smart", "fails and opens")
        refused = chat(gateway.url, live_world.a.raw_key, "smart", "skipped")
        first, second = records_of(org, 2)
    finally:
        gateway.stop()

    assert refused.status_code == 503
    assert (first.status, first.provider, first.attempts, first.fallback) == (
        502, "only", 1, "")
    assert (second.status, second.provider, second.attempts, second.fallback) == (
        503, "", 0, "only:gpt-4o=open")
