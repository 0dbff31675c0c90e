"""What an organization could change, read from its last days of request records.

Each rule looks at the window with a few aggregate queries, and says in its explanation
what it measured. Savings are the dollars measured over the window scaled to 30 days;
rules about speed or visibility rather than spend carry a saving of 0.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from statistics import median, quantiles
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from analytics.models import RequestLog
from analytics.prices import MILLION, PriceBook
from analytics.selectors import (
    HIT,
    UNPRICED,
    PercentileCont,
    percentile,
    percentile_friendly_plan,
    percentiles_in_sql,
)
from caching.models import CacheEntry
from caching.outcomes import UPSTREAM_OUTCOMES, CacheOutcome
from organizations.models import Organization

CENT = Decimal("0.01")
# Misses and bypasses went to the provider; hits did not, nor requests refused before.
ASKED_UPSTREAM = Q(cache_outcome__in=UPSTREAM_OUTCOMES)

# Below these counts in the window a pattern is noise, not advice.
MIN_REQUESTS = 20
# "Short" prompts for the cheaper-model rule, in prompt tokens.
SHORT_PROMPT_TOKENS = 500
# How many distinct cached prompts of a model the cheaper-model rule reads.
PROMPT_SAMPLE = 200
# Share of hits served by PostgreSQL above which the hot tier is letting go too early.
POSTGRES_HIT_SHARE = 0.2
# Cache keys whose repeat intervals the TTL rule measures.
REPEAT_SAMPLE = 200
PROVIDER_ERROR_RATE = 0.05
PROVIDER_P95_UPSTREAM_MS = 10_000.0

# An expensive model (glob over the name asked for) -> a cheaper sibling of the same
# provider that handles short single-turn prompts well. Dated snapshots included.
CHEAPER_MODELS: list[tuple[str, str]] = [
    ("gpt-4o", "gpt-4o-mini"),
    ("gpt-4o-20*", "gpt-4o-mini"),
    ("gpt-4.1", "gpt-4.1-mini"),
    ("gpt-4.1-20*", "gpt-4.1-mini"),
    ("gpt-4-turbo*", "gpt-4o-mini"),
    ("o3", "o4-mini"),
    ("o3-20*", "o4-mini"),
    ("claude-opus-4*", "claude-sonnet-4"),
    ("claude-3-opus*", "claude-3-5-haiku"),
    ("claude-sonnet-4*", "claude-3-5-haiku"),
    ("claude-3-7-sonnet*", "claude-3-5-haiku"),
    ("claude-3-5-sonnet*", "claude-3-5-haiku"),
    ("gemini-1.5-pro*", "gemini-1.5-flash"),
    ("gemini-2.5-pro*", "gemini-2.5-flash"),
    ("mistral-large*", "mistral-small"),
    ("*llama-3.1-405b*", "llama-3.1-70b"),
]
CHAT_ENDPOINTS = ("chat/completions", "completions")
# Signs of code in a prompt: fences, common keywords, statement and block endings, tags.
_CODE = re.compile(
    r"```|^\s*(def|class|import|from|function|const|let|var|public|private|#include)\b"
    r"|[;{}]\s*$|=>|</?[a-zA-Z][\w-]*>",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Recommendation:
    kind: str
    title: str
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    monthly_saving: Decimal = Decimal(0)


@dataclass(frozen=True)
class Window:
    organization: Organization
    days: int
    start: datetime
    end: datetime

    @property
    def to_month(self) -> Decimal:
        return Decimal(30) / Decimal(self.days)

    def logs(self):
        return RequestLog.objects.filter(organization=self.organization,
                                         created_at__gte=self.start, created_at__lt=self.end)

    def monthly(self, amount: Decimal) -> Decimal:
        return (amount * self.to_month).quantize(CENT, ROUND_HALF_UP)


def recommendations_for(*, organization: Organization, days: int) -> list[Recommendation]:
    """The organization's recommendations over the last `days` days, biggest saving first."""
    if days <= 0:
        raise ValueError("days must be positive")
    end = timezone.now()
    window = Window(organization, days, end - timedelta(days=days), end)
    prices = PriceBook.load()
    by_provider = _totals_by_provider(window)
    totals = {name: sum(row[name] for row in by_provider)
              for name in ("hits", "postgres_hits", "streamed_unpriced", "streamed_no_usage")}
    found: list[Recommendation] = [
        *_cheaper_models(window, prices),
        *_bypassed_repeats(window),
        *_hot_tier_lets_go(window, totals),
        *_providers(window, by_provider),
        *_streamed_unpriced(window, totals),
    ]
    return sorted(found, key=lambda r: (-r.monthly_saving, r.kind, r.title))


def _totals_by_provider(window: Window) -> list[dict]:
    """The counts several rules need, per provider, in one pass over the window."""
    aggregates: dict[str, Any] = {
        "hits": Count("id", filter=HIT),
        "postgres_hits": Count("id", filter=Q(cache_outcome=CacheOutcome.HIT_POSTGRES)),
        "upstream_requests": Count("id", filter=ASKED_UPSTREAM),
        "errors": Count("id", filter=ASKED_UPSTREAM & (Q(status__gte=500) | Q(status=0))),
        "streamed_unpriced": Count("id", filter=UNPRICED & Q(streamed=True)),
        "streamed_no_usage": Count("id", filter=UNPRICED & Q(
            streamed=True, prompt_tokens=0, completion_tokens=0)),
    }
    return list(window.logs().values("provider").annotate(**aggregates).order_by("provider"))


def _p95_upstream_latency(window: Window, provider: str) -> float | None:
    # Per provider rather than grouped: a grouped percentile sorts every row of the
    # window by provider first (1.5 s on a million rows, against 0.4 s this way).
    logs = window.logs().filter(provider=provider, upstream_latency_ms__isnull=False)
    if not percentiles_in_sql():
        return percentile(sorted(logs.values_list("upstream_latency_ms", flat=True)), 0.95)
    with percentile_friendly_plan():
        return logs.aggregate(
            p95=PercentileCont("upstream_latency_ms", percentile=0.95)
        )["p95"]


def _sample_keys(logs, size: int) -> list[str]:
    """Up to `size` distinct cache keys of these records, read without a full DISTINCT."""
    keys = logs.exclude(cache_key="").values_list("cache_key", flat=True)[:size * 5]
    return list(dict.fromkeys(keys))[:size]


# --- An expensive model for simple prompts ---------------------------------------------

def cheaper_model_for(model: str) -> str | None:
    name = model.strip().lower()
    for pattern, cheaper in CHEAPER_MODELS:
        if fnmatch.fnmatchcase(name, pattern):
            return cheaper
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def is_simple_request(request: dict) -> bool:
    """A single user turn (an optional system message), no tools, no code."""
    if request.get("tools") or request.get("functions"):
        return False
    messages = request.get("messages")
    if messages is None:  # the legacy completions endpoint
        prompt = request.get("prompt")
        return isinstance(prompt, str) and not _CODE.search(prompt)
    if not isinstance(messages, list):
        return False
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if roles.count("user") != 1 or set(roles) - {"system", "developer", "user"}:
        return False
    text = "\n".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    return not _CODE.search(text)


def _cheaper_models(window: Window, prices: PriceBook) -> list[Recommendation]:
    paid = window.logs().filter(
        endpoint__in=CHAT_ENDPOINTS, status__gte=200, status__lt=300, cost__isnull=False
    ).exclude(HIT)
    short = Q(prompt_tokens__lte=SHORT_PROMPT_TOKENS)
    rows = paid.values("model_requested").annotate(
        requests=Count("id"),
        short=Count("id", filter=short),
        prompt=Sum("prompt_tokens", filter=short),
        completion=Sum("completion_tokens", filter=short),
        short_cost=Sum("cost", filter=short),
    )
    found = []
    for row in rows:
        model, cheaper = row["model_requested"], cheaper_model_for(row["model_requested"])
        if cheaper is None or row["short"] < MIN_REQUESTS:
            continue
        price = prices.price_for(cheaper, window.end)
        if price is None:
            continue
        cheaper_cost = ((row["prompt"] * price.input_per_million
                         + row["completion"] * price.output_per_million) / MILLION)
        keys = _sample_keys(paid.filter(short, model_requested=model), PROMPT_SAMPLE)
        requests = list(CacheEntry.objects.filter(
            organization=window.organization, key_hash__in=keys
        ).values_list("request", flat=True))
        simple = sum(1 for request in requests if is_simple_request(request))
        share = Decimal(simple) / len(requests) if requests else Decimal(1)
        saving = (row["short_cost"] - cheaper_cost) * share
        if saving <= 0:
            continue
        if requests:
            measured = (f"We read the messages of {len(requests)} of these prompts (the ones "
                        f"in the cache): {simple} ({share:.0%}) were a single turn with no "
                        f"code, so the estimate counts that share.")
        else:
            measured = ("Their messages were not cached (no-store), so this judges them by "
                        "length alone.")
        found.append(Recommendation(
            kind="cheaper_model",
            title=f"Send short, simple {model} prompts to {cheaper}",
            explanation=(
                f"{row['short']} of {row['requests']} paid {model} requests in the last "
                f"{window.days} days had prompts of at most {SHORT_PROMPT_TOKENS} tokens. "
                f"{measured} At {cheaper}'s list price those requests would have cost "
                f"${cheaper_cost:.2f} instead of ${row['short_cost']:.2f}."
            ),
            evidence={
                "model": model, "cheaper_model": cheaper, "requests": row["requests"],
                "short_requests": row["short"], "short_prompt_tokens": SHORT_PROMPT_TOKENS,
                "prompts_inspected": len(requests), "prompts_simple": simple,
                "cost": _money(row["short_cost"]),
                "cost_with_cheaper_model": _money(cheaper_cost),
            },
            monthly_saving=window.monthly(saving),
        ))
    return found


# --- Cache bypassed on repeated requests ------------------------------------------------

def _bypassed_repeats(window: Window) -> list[Recommendation]:
    bypassed = window.logs().filter(cache_bypassed=True).exclude(cache_key="")
    totals = (
        bypassed.values("cache_key").annotate(n=Count("id"), key_cost=Sum("cost"))
        .filter(n__gt=1)
        .aggregate(prompts=Count("cache_key"), requests=Sum("n"), repeat_cost=Sum("key_cost"))
    )
    prompts, requests = totals["prompts"] or 0, totals["requests"] or 0
    avoidable = requests - prompts
    if avoidable < MIN_REQUESTS:
        return []
    cost = totals["repeat_cost"] or Decimal(0)
    # Each repeated prompt had to be asked once; the cache could have answered the rest.
    saving = cost * avoidable / requests
    return [Recommendation(
        kind="cache_bypassed_repeats",
        title="Stop bypassing the cache for requests that repeat",
        explanation=(
            f"In the last {window.days} days {requests} requests sent with Cache-Control "
            f"no-cache or no-store repeated one of {prompts} identical requests; the cache "
            f"could have answered {avoidable} of them, which cost ${saving:.2f} upstream. "
            f"Drop no-cache/no-store on these calls, or give them a max-age instead."
        ),
        evidence={"repeated_requests": requests, "distinct_requests": prompts,
                  "avoidable_requests": avoidable, "cost": _money(cost),
                  "avoidable_cost": _money(saving)},
        monthly_saving=window.monthly(saving),
    )]


# --- The hot tier lets entries go before they are asked again --------------------------

def _repeat_gaps(window: Window) -> list[float]:
    """Seconds since the previous request with the same key, for PostgreSQL hits."""
    logs = window.logs()
    keys = _sample_keys(logs.filter(cache_outcome=CacheOutcome.HIT_POSTGRES), REPEAT_SAMPLE)
    gaps, previous = [], {}
    rows = (logs.filter(cache_key__in=keys).order_by("cache_key", "created_at")
            .values_list("cache_key", "created_at", "cache_outcome"))
    for key, created_at, outcome in rows:
        if outcome == CacheOutcome.HIT_POSTGRES and key in previous:
            gaps.append((created_at - previous[key]).total_seconds())
        previous[key] = created_at
    return gaps


def _hot_tier_lets_go(window: Window, totals: dict) -> list[Recommendation]:
    hits, postgres = totals["hits"], totals["postgres_hits"]
    if postgres < MIN_REQUESTS or postgres < POSTGRES_HIT_SHARE * hits:
        return []
    gaps = _repeat_gaps(window)
    ttl = window.organization.cache_ttl_seconds or settings.COGNITUDE_CACHE_TTL
    typical = median(gaps) if gaps else None
    evidence = {
        "hits": hits, "postgres_hits": postgres,
        "postgres_hit_share": round(postgres / hits, 4),
        "hot_tier_ttl_seconds": ttl,
        "median_repeat_interval_seconds": round(typical) if typical is not None else None,
        "repeats_measured": len(gaps),
    }
    share = f"{postgres} of {hits} cache hits"
    if typical is not None and typical < ttl:
        # Asked again well within the TTL and still gone from Redis: evicted, not expired.
        return [Recommendation(
            kind="hot_tier_evicting",
            title="Redis is evicting cached answers before their TTL",
            explanation=(
                f"{share} in the last {window.days} days came from PostgreSQL, not Redis. "
                f"Those requests repeated after a median of {_duration(typical)}, inside the "
                f"hot-tier TTL of {_duration(ttl)}, so Redis evicted them (memory limit). "
                f"Give Redis more memory. This saves latency, not upstream spend."
            ),
            evidence=evidence,
        )]
    suggested = _duration(quantiles(gaps, n=4)[2] if len(gaps) > 1 else typical or ttl * 2)
    return [Recommendation(
        kind="hot_tier_ttl",
        title="Raise the hot-tier TTL to cover how often requests repeat",
        explanation=(
            f"{share} in the last {window.days} days came from PostgreSQL because Redis had "
            f"already let them go: the TTL is {_duration(ttl)}, and "
            + (f"these requests repeated after a median of {_duration(typical)}. "
               if typical is not None else "the repeat interval could not be measured. ")
            + f"A TTL of about {suggested} would serve most of them from Redis. This saves "
            f"latency, not upstream spend."
        ),
        evidence=evidence,
    )]


# --- A provider that fails or is slow ---------------------------------------------------

def _providers(window: Window, by_provider: list[dict]) -> list[Recommendation]:
    found = []
    for row in by_provider:
        if not row["provider"] or row["upstream_requests"] < MIN_REQUESTS:
            continue
        row = {**row, "requests": row["upstream_requests"],
               "p95": _p95_upstream_latency(window, row["provider"])}
        rate = row["errors"] / row["requests"]
        evidence = {"provider": row["provider"], "upstream_requests": row["requests"],
                    "errors": row["errors"], "error_rate": round(rate, 4),
                    "p95_upstream_latency_ms": round(row["p95"], 1) if row["p95"] else None}
        if rate >= PROVIDER_ERROR_RATE:
            found.append(Recommendation(
                kind="provider_errors",
                title=f"{row['provider']} fails {rate:.1%} of requests",
                explanation=(
                    f"{row['errors']} of {row['requests']} requests sent to {row['provider']} "
                    f"in the last {window.days} days ended in a server error or a dropped "
                    f"connection. Check the provider's status and your credentials, or add "
                    f"a fallback provider. The saving is not in dollars: failed requests "
                    f"are not billed, but your users saw the errors."
                ),
                evidence=evidence,
            ))
        if row["p95"] is not None and row["p95"] >= PROVIDER_P95_UPSTREAM_MS:
            found.append(Recommendation(
                kind="provider_latency",
                title=f"{row['provider']} is slow: p95 {row['p95'] / 1000:.1f} s upstream",
                explanation=(
                    f"One in twenty requests sent to {row['provider']} in the last "
                    f"{window.days} days took {row['p95'] / 1000:.1f} s or more upstream. "
                    f"Consider a faster model or provider for latency-sensitive calls, or "
                    f"stream the answers."
                ),
                evidence=evidence,
            ))
    return found


# --- Streamed requests nobody can price -------------------------------------------------

def _streamed_unpriced(window: Window, totals: dict) -> list[Recommendation]:
    requests, no_usage = totals["streamed_unpriced"], totals["streamed_no_usage"]
    if requests < MIN_REQUESTS:
        return []
    streamed = window.logs().filter(UNPRICED, streamed=True)
    models = [row["model_requested"] for row in streamed.values("model_requested")
              .annotate(n=Count("id")).order_by("-n", "model_requested")[:5]]
    unpriced_model = requests - no_usage
    return [Recommendation(
        kind="streamed_unpriced",
        title="Streamed requests with an unknown cost",
        explanation=(
            f"{requests} streamed requests in the last {window.days} days have no "
            f"cost: {no_usage} reported no token usage and {unpriced_model} used a model "
            f"without a price ({', '.join(models)}). Their spend is missing from every "
            f"total here. Add the missing prices in the admin (Model prices); for streams "
            f"without usage, check that the upstream honours stream_options.include_usage."
        ),
        evidence={"requests": requests, "without_usage": no_usage,
                  "unpriced_model": unpriced_model, "models": models,
                  "per_month": round(requests * 30 / window.days)},
    )]


def _money(amount: Decimal) -> str:
    return str(amount.quantize(CENT, ROUND_HALF_UP))


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"
