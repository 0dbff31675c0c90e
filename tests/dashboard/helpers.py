"""Plain helpers for the dashboard tests: records as the event pipeline writes them,
and the URLs of every page and action."""

import re
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.test import Client
from django.utils import timezone

from analytics.models import RequestLog
from caching.models import CacheEntry
from caching.outcomes import CacheOutcome
from organizations.models import ApiKey, Organization

ANY_RAW_KEY = re.compile(r"cog_[0-9A-Za-z]{38}")


def make_request_log(organization: Organization, *, api_key: ApiKey | None = None,
                     created_at: datetime | None = None, **fields) -> RequestLog:
    values = {
        "endpoint": "chat/completions",
        "model_requested": "gpt-4o-mini",
        "model_used": "gpt-4o-mini",
        "provider": "openai",
        "cache_outcome": CacheOutcome.MISS,
        "status": 200,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "cost": Decimal("0.0010"),
        "saved_cost": Decimal("0"),
        "latency_ms": 300.0,
        **fields,
    }
    return RequestLog.objects.create(
        request_id=uuid.uuid4().hex, organization=organization, api_key=api_key,
        created_at=created_at or timezone.now() - timedelta(minutes=5), **values,
    )


def make_cache_entry(organization: Organization, *, hits: int = 0) -> CacheEntry:
    return CacheEntry.objects.create(
        organization=organization, key_hash=uuid.uuid4().hex * 2, endpoint="chat/completions",
        model="gpt-4o-mini", request={"messages": []}, payload=b"x", hits=hits,
        created_at=timezone.now(),
    )


def csrf_client(user) -> Client:
    """A logged-in client that, like a browser, must send the CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token(client: Client, url: str) -> str:
    """Open a page (as a browser would before posting) and read the CSRF token."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return client.cookies["csrftoken"].value


# name -> (URL under /orgs/<slug>/, query string for the page)
PAGES = {
    "overview": "",
    "top-recommendations": "top-recommendations/",
    "usage": "usage/",
    "usage-csv": "usage.csv",
    "cache": "cache/",
    "keys": "keys/",
    "providers": "providers/",
    "routes": "routes/",
    "recommendations": "recommendations/",
}


def page_url(organization: Organization, name: str) -> str:
    return f"/orgs/{organization.slug}/{PAGES[name]}"
