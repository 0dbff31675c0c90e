"""Costs and savings: request_logs_store prices each record from the ModelPrice table."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.models import ModelPrice, RequestLog
from analytics.prices import PriceBook
from analytics.selectors import usage_summary
from analytics.services import request_logs_store
from caching.outcomes import CacheOutcome
from tests.analytics.helpers import make_event

pytestmark = pytest.mark.django_db


def store(org, **overrides) -> RequestLog:
    event = make_event(org_id=org.pk, **overrides)
    request_logs_store(events=[event])
    return RequestLog.objects.get(request_id=event.request_id)


def at(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_it_prices_a_miss_from_its_tokens(world):
    # gpt-4o: $2.50 in, $10.00 out per million (the data migration's list price)
    log = store(world.a.org, prompt_tokens=1000, completion_tokens=500)
    assert log.cost == Decimal("0.0075")
    assert log.saved_cost == 0


def test_it_prices_bypasses_like_misses(world):
    log = store(world.a.org, cache_outcome=CacheOutcome.BYPASS, cache_bypassed=True)
    assert log.cost == Decimal("0.0075")


def test_it_counts_a_hit_as_saved_not_spent(world):
    log = store(world.a.org, cache_outcome=CacheOutcome.HIT_REDIS, upstream_latency_ms=None)
    assert log.cost == 0
    assert log.saved_cost == Decimal("0.0075")


def test_it_charges_nothing_for_an_error(world):
    log = store(world.a.org, status=502, prompt_tokens=0, completion_tokens=0)
    assert (log.cost, log.saved_cost) == (0, 0)


def test_it_leaves_an_unknown_model_unpriced_not_free(world):
    miss = store(world.a.org, model_requested="my-finetune", model_used="my-finetune")
    hit = store(world.a.org, model_requested="my-finetune", model_used="my-finetune",
                cache_outcome=CacheOutcome.HIT_POSTGRES)
    store(world.a.org)  # a priced one alongside

    assert miss.cost is None
    assert (hit.cost, hit.saved_cost) == (0, None)
    summary = usage_summary(organization=world.a.org, start=datetime(2000, 1, 1, tzinfo=UTC),
                            end=datetime(2100, 1, 1, tzinfo=UTC))
    assert summary["unpriced_requests"] == 2
    assert summary["cost"] == Decimal("0.0075")


def test_it_treats_a_stream_without_usage_as_unknown(world):
    log = store(world.a.org, streamed=True, prompt_tokens=0, completion_tokens=0)
    assert log.cost is None


def test_it_prices_the_model_used_over_the_model_asked(world):
    log = store(world.a.org, model_requested="gpt-4o", model_used="gpt-4o-mini-2024-07-18")
    # gpt-4o-mini*: $0.15 in, $0.60 out
    assert log.cost == Decimal("0.00045")


def test_it_prefers_an_exact_name_then_the_longest_pattern(world):
    book = PriceBook.load()
    today = date(2026, 1, 1)
    assert book.price_for("gpt-4o-2024-05-13", today).input_per_million == Decimal("5")
    assert book.price_for("gpt-4o-2024-08-06", today).input_per_million == Decimal("2.5")
    assert book.price_for("gpt-4o-mini-2024-07-18", today).input_per_million == Decimal("0.15")
    assert book.price_for("GPT-4o-Mini", today).model == "gpt-4o-mini*"
    assert book.price_for("meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
                          today).model == "*llama-3.1-70b*"
    assert book.price_for("claude-3-5-haiku-20241022", today).model == "claude-3-5-haiku*"
    assert book.price_for("no-such-model", today) is None


def test_it_uses_the_price_in_force_on_the_day(world):
    # o3 was cut from $10/$40 to $2/$8 on 2025-06-10.
    before = store(world.a.org, model_used="o3", created_at=at(2025, 5, 1, 12))
    after = store(world.a.org, model_used="o3", created_at=at(2025, 6, 10, 0, 0, 1))
    unreleased = store(world.a.org, model_used="o3", created_at=at(2025, 1, 1))
    assert before.cost == Decimal("0.03")  # 1000 * 10 / 1M + 500 * 40 / 1M
    assert after.cost == Decimal("0.006")
    assert unreleased.cost is None


def test_it_applies_a_price_added_by_an_operator(world):
    ModelPrice.objects.create(model="acme-*", input_per_million=Decimal("1"),
                              output_per_million=Decimal("2"), effective_from=date(2026, 1, 1))
    ModelPrice.objects.create(model="acme-large", input_per_million=Decimal("3"),
                              output_per_million=Decimal("4"), effective_from=date(2026, 1, 1))
    small = store(world.a.org, model_used="acme-small", created_at=at(2026, 2, 1))
    large = store(world.a.org, model_used="acme-large", created_at=at(2026, 2, 1))
    early = store(world.a.org, model_used="acme-small", created_at=at(2025, 12, 31, 23))
    assert small.cost == Decimal("0.002")
    assert large.cost == Decimal("0.005")
    assert early.cost is None


def test_it_reads_the_price_table_once_per_batch(world):
    events = [make_event(org_id=world.a.org.pk, model_used=model)
              for model in ("gpt-4o", "o3", "claude-sonnet-4-20250514", "unknown") * 25]
    with CaptureQueriesContext(connection) as queries:
        request_logs_store(events=events)
    price_reads = [q for q in queries.captured_queries if "analytics_modelprice" in q["sql"]]
    assert len(price_reads) == 1
    assert RequestLog.objects.filter(organization=world.a.org).count() == 100
    assert RequestLog.objects.filter(organization=world.a.org, cost__isnull=True).count() == 25


def test_it_lets_an_operator_edit_prices_in_the_admin(world, admin_client):
    listing = admin_client.get("/admin/analytics/modelprice/", {"q": "gpt-4o"})
    assert listing.status_code == 200 and b"gpt-4o-mini*" in listing.content
    response = admin_client.post("/admin/analytics/modelprice/add/", {
        "model": "acme-*", "provider": "acme", "input_per_million": "1.5",
        "output_per_million": "3", "effective_from": "2026-01-01",
    })
    assert response.status_code == 302, response.content
    assert store(world.a.org, model_used="acme-9", created_at=at(2026, 2, 1)).cost == Decimal(
        "0.003")
    # Request records are read-only there.
    assert admin_client.get("/admin/analytics/requestlog/").status_code == 200
    assert admin_client.get("/admin/analytics/requestlog/add/").status_code == 403
