"""The analytics API: who may read which organization, the parameters, the shapes, and
one trip through the live gateway."""

import time
from decimal import Decimal

import httpx
import pytest
from django.test import Client

from analytics.models import RequestLog
from organizations.services import api_key_revoke, membership_set
from tests.analytics.helpers import make_log
from tests.proxy.helpers import ask, client_for

SUMMARY = "/api/analytics/summary"
TIMESERIES = "/api/analytics/timeseries"
BREAKDOWN = "/api/analytics/breakdown"
RECOMMENDATIONS = "/api/recommendations"
ENDPOINTS = [SUMMARY, TIMESERIES, BREAKDOWN, RECOMMENDATIONS]


def session_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def key_client(raw_key: str, header: str = "bearer") -> Client:
    if header == "bearer":
        return Client(headers={"Authorization": f"Bearer {raw_key}"})
    return Client(headers={"X-API-Key": raw_key})


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"]
    return error


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_serves_members_by_session(world, url):
    make_log(world.a.org)
    for user in (world.alice, world.bob):  # owner and plain member alike
        response = session_for(user).get(url, {"org": world.a.org.slug})
        assert response.status_code == 200, response.content
        assert response.json()["organization"] == world.a.org.slug
    # A member of a single organization may leave ?org= out.
    assert session_for(world.bob).get(url).json()["organization"] == world.a.org.slug


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_checks_ownership(world, url):
    make_log(world.a.org)
    response = session_for(world.charlie).get(url, {"org": world.a.org.slug})
    assert_error(response, 404, "No such organization")
    response = session_for(world.charlie).get(url, {"org": "no-such-org"})
    assert_error(response, 404)


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_serves_the_keys_organization(world, url):
    for header in ("bearer", "x-api-key"):
        response = key_client(world.a.raw_key, header).get(url)
        assert response.status_code == 200, response.content
        assert response.json()["organization"] == world.a.org.slug
    same_org = key_client(world.a.raw_key).get(url, {"org": world.a.org.slug})
    assert same_org.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_never_lets_a_key_read_another_organization(world, url):
    response = key_client(world.b.raw_key).get(url, {"org": world.a.org.slug})
    assert_error(response, 404, "No such organization")
    # Even with a session of org A on top, the key decides.
    client = session_for(world.alice)
    response = client.get(url, {"org": world.a.org.slug},
                          headers={"Authorization": f"Bearer {world.b.raw_key}"})
    assert_error(response, 404)


@pytest.mark.django_db
def test_it_counts_only_the_keys_organization(world):
    make_log(world.a.org, cost=Decimal("1.5"))
    make_log(world.a.org)
    make_log(world.b.org, cost=Decimal("0.25"))
    body = key_client(world.b.raw_key).get(SUMMARY).json()
    assert body["organization"] == world.b.org.slug
    assert body["requests"] == 1 and body["cost"] == 0.25


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_refuses_anonymous_and_bad_keys(world, url):
    response = Client().get(url, {"org": world.a.org.slug})
    error = assert_error(response, 401)
    assert error["type"] == "authentication_error"
    assert response["WWW-Authenticate"].startswith("Bearer")

    response = key_client("cog_" + "x" * 38).get(url)
    assert_error(response, 401, "Invalid or missing API key")

    api_key_revoke(api_key=world.a.org.api_keys.get())
    assert_error(key_client(world.a.raw_key).get(url), 401)


@pytest.mark.django_db
def test_it_asks_a_member_of_several_organizations_which_one(world):
    membership_set(organization=world.b.org, user=world.alice, role="member")
    client = session_for(world.alice)
    error = assert_error(client.get(SUMMARY), 400, "org")
    assert error["param"] == "org"
    assert client.get(SUMMARY, {"org": world.b.org.slug}).json()["organization"] == "org-b"


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "params", "param", "words"), [
    (SUMMARY, {"period": "5d"}, "period", ["24h, 7d, 30d", "5d"]),
    (SUMMARY, {"start": "yesterday", "end": "2026-01-01T00:00:00Z"}, "start",
     ["Datetime has wrong format", "YYYY-MM-DD"]),
    (SUMMARY, {"start": "2026-01-01T00:00:00Z"}, None, ["start and end"]),
    (SUMMARY, {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, None,
     ["end must be after start"]),
    (SUMMARY, {"period": "7d", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00Z"},
     None, ["either period or start and end"]),
    (SUMMARY, {"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, None,
     ["at most 400 days"]),
    (TIMESERIES, {"interval": "minute"}, "interval", ["hour, day"]),
    (TIMESERIES, {"start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z",
                  "interval": "hour"}, None, ["buckets", "interval=day"]),
    (BREAKDOWN, {"by": "user"}, "by", ["model, api_key, endpoint"]),
    (RECOMMENDATIONS, {"days": "3"}, "days", ["7, 30"]),
])
def test_it_rejects_bad_parameters(world, url, params, param, words):
    error = assert_error(key_client(world.a.raw_key).get(url, params), 400, *words)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.django_db
def test_it_returns_the_documented_shapes(world):
    make_log(world.a.org, cost=Decimal("0.125"), latency_ms=200.0)
    make_log(world.a.org, cache_outcome="hit_redis", cost=0, saved_cost=Decimal("0.125"),
             latency_ms=2.0)
    client = key_client(world.a.raw_key)

    summary = client.get(SUMMARY, {"period": "7d"}).json()
    assert summary["period"] == "7d"
    assert (summary["requests"], summary["hits"], summary["hit_rate"]) == (2, 1, 0.5)
    assert summary["hits_by_tier"] == {"redis": 1, "postgres": 0, "memory": 0, "coalesced": 0}
    assert summary["cost"] == 0.125 and summary["saved"] == 0.125  # JSON numbers
    assert summary["p50_latency_ms"] == 101.0
    assert set(summary) == {
        "organization", "period", "start", "end", "requests", "hits", "hit_rate",
        "hits_by_tier", "misses", "bypasses", "errors", "error_rate", "prompt_tokens",
        "completion_tokens", "cost", "saved", "unpriced_requests", "p50_latency_ms",
        "p95_latency_ms"}

    series = client.get(TIMESERIES, {"period": "24h"}).json()
    assert series["interval"] == "hour" and len(series["data"]) in (24, 25)
    assert sum(b["requests"] for b in series["data"]) == 2
    assert set(series["data"][0]) == {"bucket", "requests", "hits_redis", "hits_postgres",
                                      "hits_other", "misses", "bypasses", "errors", "cost",
                                      "saved"}
    assert client.get(TIMESERIES, {"period": "30d"}).json()["interval"] == "day"

    custom = client.get(TIMESERIES, {"start": "2026-01-01T00:00:00Z",
                                     "end": "2026-01-03T00:00:00Z", "interval": "day"}).json()
    assert [b["bucket"] for b in custom["data"]] == ["2026-01-01T00:00:00Z",
                                                    "2026-01-02T00:00:00Z"]
    assert custom["period"] is None

    breakdown = client.get(BREAKDOWN, {"by": "api_key", "period": "30d"}).json()
    assert breakdown["by"] == "api_key"
    assert breakdown["data"][0]["key"] == "(deleted key)"  # make_log rows carry no key
    assert client.get(BREAKDOWN).json()["by"] == "model"

    recommendations = client.get(RECOMMENDATIONS, {"days": "30"}).json()
    assert recommendations == {"organization": world.a.org.slug, "days": 30, "data": []}


@pytest.mark.django_db
def test_it_serves_the_openapi_schema(world):
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert {SUMMARY, TIMESERIES, BREAKDOWN, RECOMMENDATIONS} <= set(schema["paths"])
    parameters = {p["name"] for p in schema["paths"][SUMMARY]["get"]["parameters"]}
    assert {"period", "start", "end", "org"} <= parameters


@pytest.mark.django_db(transaction=True)
def test_it_shows_requests_made_through_the_gateway(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    for _ in range(3):
        ask(client, "what does the API say?", model="gpt-4o")
    ask(client, "and an unpriced one", model="my-own-model")

    deadline = time.monotonic() + 5
    while (RequestLog.objects.filter(organization=live_world.a.org).count() < 4
           and time.monotonic() < deadline):
        time.sleep(0.05)
    headers = {"Authorization": f"Bearer {live_world.a.raw_key}"}
    summary = httpx.get(f"{gateway.url}{SUMMARY}", headers=headers).json()

    assert summary["requests"] == 4
    assert summary["hits"] == 2 and summary["misses"] == 2
    assert summary["hits_by_tier"]["redis"] == 2
    assert summary["cost"] > 0 and summary["saved"] > 0
    # The hits saved what the miss cost: the same tokens at the same price.
    assert summary["saved"] == pytest.approx(summary["cost"] * 2)
    assert summary["unpriced_requests"] == 1

    models = httpx.get(f"{gateway.url}{BREAKDOWN}", params={"by": "model"},
                       headers=headers).json()["data"]
    assert [(row["key"], row["requests"]) for row in models] == [("gpt-4o", 3),
                                                                 ("my-own-model", 1)]
    other = httpx.get(f"{gateway.url}{SUMMARY}", params={"org": live_world.a.org.slug},
                      headers={"X-API-Key": live_world.b.raw_key})
    assert other.status_code == 404
