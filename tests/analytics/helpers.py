"""Request records and events made by hand, for the analytics tests."""

import itertools
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from analytics.events import RequestEvent
from analytics.models import RequestLog
from caching.models import CacheEntry
from caching.outcomes import CacheOutcome

_serial = itertools.count()


def make_event(**overrides) -> RequestEvent:
    """A request event as proxy.record.Record.emit() sends it."""
    return RequestEvent(**{
        "request_id": uuid.uuid4().hex,
        "org_id": None,
        "api_key_id": None,
        "endpoint": "chat/completions",
        "model_requested": "gpt-4o",
        "model_used": "gpt-4o",
        "provider": "openai",
        "cache_outcome": CacheOutcome.MISS,
        "cache_bypassed": False,
        "cache_key": "",
        "status": 200,
        "error_type": "",
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "latency_ms": 120.0,
        "upstream_latency_ms": 110.0,
        "streamed": False,
        "created_at": time.time(),
        **overrides,
    })


def make_log(org, *, ago: timedelta = timedelta(minutes=5), **fields) -> RequestLog:
    """A RequestLog row `ago` before now; costs are given, not computed."""
    defaults = {
        "request_id": uuid.uuid4().hex,
        "endpoint": "chat/completions",
        "model_requested": "gpt-4o",
        "model_used": "gpt-4o",
        "provider": "openai",
        "cache_outcome": CacheOutcome.MISS,
        "status": 200,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "cost": Decimal("0.001"),
        "saved_cost": Decimal(0),
        "latency_ms": 100.0,
        "upstream_latency_ms": 90.0,
        "created_at": timezone.now() - ago,
    }
    return RequestLog.objects.create(organization=org, **{**defaults, **fields})


def make_cache_entry(org, *, key_hash: str | None = None, request: dict | None = None,
                     model: str = "gpt-4o", created_at: datetime | None = None) -> CacheEntry:
    return CacheEntry.objects.create(
        organization=org,
        key_hash=key_hash or f"{next(_serial):064x}",
        endpoint="chat/completions",
        model=model,
        request=request or {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        payload=b"{}",
        created_at=created_at or timezone.now(),
    )
