"""The recommendations engine on crafted request records."""

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from analytics.recommendations import (
    Recommendation,
    cheaper_model_for,
    is_simple_request,
    recommendations_for,
)
from tests.analytics.helpers import make_cache_entry, make_log

pytestmark = pytest.mark.django_db

# A model with no cheaper sibling, for records that should not trigger that rule.
CHEAP = "gpt-4o-mini"

SIMPLE = {"model": "gpt-4o", "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]}
CODE = {"model": "gpt-4o", "messages": [
    {"role": "user", "content": "Why does this fail?\n```python\nprint(1/0)\n```"},
]}


def kinds(found: list[Recommendation]) -> list[str]:
    return [r.kind for r in found]


def expensive_short_requests(org, count: int, request: dict) -> None:
    """`count` gpt-4o misses of 200 + 100 tokens, each a different cached prompt."""
    for n in range(count):
        entry = make_cache_entry(org, request=request)
        make_log(org, cache_key=entry.key_hash, prompt_tokens=200, completion_tokens=100,
                 cost=Decimal("0.0015"), ago=timedelta(hours=n + 1))


def test_it_recommends_nothing_for_an_empty_organization(world):
    assert recommendations_for(organization=world.a.org, days=7) == []
    assert recommendations_for(organization=world.a.org, days=30) == []


def test_it_recommends_a_cheaper_model_for_simple_prompts(world):
    expensive_short_requests(world.a.org, 30, SIMPLE)
    make_log(world.a.org, prompt_tokens=5000, cost=Decimal("0.02"))  # a long one, not counted
    expensive_short_requests(world.b.org, 30, CODE)  # another org's

    [found] = recommendations_for(organization=world.a.org, days=7)

    assert found.kind == "cheaper_model"
    assert "gpt-4o-mini" in found.title
    assert found.evidence["short_requests"] == 30 and found.evidence["requests"] == 31
    assert found.evidence["prompts_inspected"] == found.evidence["prompts_simple"] == 30
    # 30 x $0.0015 paid; at gpt-4o-mini prices 30 x (200 x 0.15 + 100 x 0.60) / 1M
    assert found.evidence["cost"] == "0.05"
    assert found.evidence["cost_with_cheaper_model"] == "0.00"
    saving = (Decimal("0.045") - Decimal("0.0027")) * 30 / 7
    assert found.monthly_saving == saving.quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert "single turn with no code" in found.explanation


def test_it_does_not_count_prompts_with_code(world):
    expensive_short_requests(world.a.org, 30, CODE)
    assert recommendations_for(organization=world.a.org, days=7) == []


def test_it_judges_by_length_when_no_prompt_was_cached(world):
    for n in range(25):
        make_log(world.a.org, cache_key=f"{n:064x}", cache_outcome="bypass",
                 cache_bypassed=True, prompt_tokens=200, completion_tokens=100,
                 cost=Decimal("0.0015"))
    [found] = recommendations_for(organization=world.a.org, days=30)
    assert found.kind == "cheaper_model"
    assert found.evidence["prompts_inspected"] == 0
    assert "length alone" in found.explanation


def test_it_flags_bypassing_the_cache_on_repeats(world):
    for n in range(30):  # 3 distinct prompts asked 10 times each, with no-cache
        make_log(world.a.org, cache_key=f"{n % 3:064x}", cache_outcome="bypass",
                 cache_bypassed=True, prompt_tokens=2000, cost=Decimal("0.01"))
    for n in range(10):  # bypassed but never repeated: no help from a cache
        make_log(world.a.org, cache_key=f"{100 + n:064x}", cache_outcome="bypass",
                 cache_bypassed=True, prompt_tokens=2000, cost=Decimal("0.01"))

    found = recommendations_for(organization=world.a.org, days=30)

    assert kinds(found) == ["cache_bypassed_repeats"]
    evidence = found[0].evidence
    assert (evidence["repeated_requests"], evidence["distinct_requests"],
            evidence["avoidable_requests"]) == (30, 3, 27)
    assert evidence["avoidable_cost"] == "0.27"
    assert found[0].monthly_saving == Decimal("0.27")  # 30 days measured, 30 days a month


def test_it_scales_savings_to_a_month(world):
    for _ in range(30):
        make_log(world.a.org, cache_key="a" * 64, cache_outcome="bypass",
                 cache_bypassed=True, prompt_tokens=2000, cost=Decimal("0.07"))
    [week] = recommendations_for(organization=world.a.org, days=7)
    [month] = recommendations_for(organization=world.a.org, days=30)
    assert month.monthly_saving == Decimal("2.03")  # 29 avoidable x $0.07
    assert week.monthly_saving == Decimal("8.70")  # 2.03 x 30 / 7


def postgres_hits(org, *, gap: timedelta, keys: int = 25) -> None:
    """Each key asked twice, `gap` apart: a miss, then a hit from PostgreSQL."""
    for n in range(keys):
        key = f"{n:064x}"
        make_log(org, cache_key=key, model_requested=CHEAP, ago=gap + timedelta(minutes=1))
        make_log(org, cache_key=key, model_requested=CHEAP, cache_outcome="hit_postgres",
                 cost=0, saved_cost=Decimal("0.001"), ago=timedelta(minutes=1))


def test_it_says_the_hot_tier_ttl_is_shorter_than_the_repeats(world):
    world.a.org.cache_ttl_seconds = 3600
    world.a.org.save(update_fields=["cache_ttl_seconds"])
    postgres_hits(world.a.org, gap=timedelta(hours=5))

    [found] = recommendations_for(organization=world.a.org, days=7)

    assert found.kind == "hot_tier_ttl"
    assert found.evidence["postgres_hits"] == 25 and found.evidence["postgres_hit_share"] == 1
    assert found.evidence["hot_tier_ttl_seconds"] == 3600
    assert found.evidence["median_repeat_interval_seconds"] == 5 * 3600
    assert "5 hours" in found.explanation and found.monthly_saving == 0


def test_it_tells_eviction_from_expiry(world):
    postgres_hits(world.a.org, gap=timedelta(minutes=10))  # well inside the 24 h default
    [found] = recommendations_for(organization=world.a.org, days=7)
    assert found.kind == "hot_tier_evicting"


def test_it_stays_quiet_when_redis_serves_the_hits(world):
    for n in range(25):
        make_log(world.a.org, cache_key=f"{n:064x}", cache_outcome="hit_redis", cost=0)
    assert recommendations_for(organization=world.a.org, days=7) == []


def test_it_flags_a_failing_provider(world):
    for n in range(40):
        make_log(world.a.org, status=502 if n % 4 == 0 else 200, cost=Decimal(0),
                 provider="openai")
    found = recommendations_for(organization=world.a.org, days=7)
    assert kinds(found) == ["provider_errors"]
    assert found[0].evidence["error_rate"] == 0.25
    assert found[0].evidence["errors"] == 10


def test_it_flags_a_slow_provider(world):
    for _ in range(30):
        make_log(world.a.org, model_requested=CHEAP, upstream_latency_ms=15_000.0,
                 latency_ms=15_100.0)
    found = recommendations_for(organization=world.a.org, days=7)
    assert kinds(found) == ["provider_latency"]
    assert found[0].evidence["p95_upstream_latency_ms"] == 15_000.0


def test_it_flags_streamed_requests_without_a_cost(world):
    for _ in range(15):
        make_log(world.a.org, streamed=True, cost=None, prompt_tokens=0, completion_tokens=0)
    for _ in range(10):
        make_log(world.a.org, streamed=True, cost=None, model_requested="my-finetune")
    make_log(world.a.org, streamed=True)  # priced: fine
    found = recommendations_for(organization=world.a.org, days=7)
    assert kinds(found) == ["streamed_unpriced"]
    assert found[0].evidence["requests"] == 25
    assert found[0].evidence["without_usage"] == 15
    assert found[0].evidence["unpriced_model"] == 10
    assert found[0].evidence["models"] == ["gpt-4o", "my-finetune"]


def test_it_sorts_by_saving(world):
    for _ in range(30):
        make_log(world.a.org, streamed=True, cost=None, prompt_tokens=0, completion_tokens=0)
        make_log(world.a.org, cache_key="b" * 64, cache_outcome="bypass", cache_bypassed=True,
                 prompt_tokens=2000, cost=Decimal("0.01"))
    expensive_short_requests(world.a.org, 30, SIMPLE)

    found = recommendations_for(organization=world.a.org, days=7)

    assert sorted(kinds(found)) == ["cache_bypassed_repeats", "cheaper_model",
                                    "streamed_unpriced"]
    assert [r.monthly_saving for r in found] == sorted(
        (r.monthly_saving for r in found), reverse=True)
    assert found[-1].kind == "streamed_unpriced"


def test_it_only_reads_the_window(world):
    for _ in range(30):
        make_log(world.a.org, cache_key="c" * 64, cache_outcome="bypass", cache_bypassed=True,
                 model_requested=CHEAP, cost=Decimal("0.01"), ago=timedelta(days=10))
    assert recommendations_for(organization=world.a.org, days=7) == []
    assert kinds(recommendations_for(organization=world.a.org, days=30)) == [
        "cache_bypassed_repeats"]


@pytest.mark.parametrize(("model", "cheaper"), [
    ("gpt-4o", "gpt-4o-mini"),
    ("gpt-4o-2024-08-06", "gpt-4o-mini"),
    ("gpt-4o-mini", None),
    ("claude-opus-4-20250514", "claude-sonnet-4"),
    ("claude-3-5-sonnet-latest", "claude-3-5-haiku"),
    ("gemini-2.5-pro", "gemini-2.5-flash"),
    ("o3", "o4-mini"),
    ("o3-mini", None),
])
def test_it_knows_cheaper_siblings(model, cheaper):
    assert cheaper_model_for(model) == cheaper


@pytest.mark.parametrize(("request_body", "simple"), [
    (SIMPLE, True),
    (CODE, False),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                   {"role": "user", "content": "more"}]}, False),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "const x = 1;"}]}]},
     False),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, False),
    ({"prompt": "Say hello"}, True),
])
def test_it_tells_simple_prompts(request_body, simple):
    assert is_simple_request(request_body) is simple
