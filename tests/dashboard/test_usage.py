"""Usage breakdowns: by model, API key and endpoint, sortable, exported as CSV."""

import csv
import io
import re
from decimal import Decimal

import pytest

from organizations.models import ApiKey
from tests.dashboard.helpers import make_request_log

pytestmark = pytest.mark.django_db
ROW_HEADER = re.compile(r'<th scope="row">([^<]*)</th>')


@pytest.fixture
def usage_data(world):
    key = ApiKey.objects.get(organization=world.a.org)
    for _ in range(3):
        make_request_log(world.a.org, api_key=key, model_requested="gpt-4o-mini",
                         cost=Decimal("0.01"))
    make_request_log(world.a.org, api_key=key, model_requested="gpt-4o", cost=Decimal("2.00"))
    make_request_log(world.a.org, model_requested="=HYPERLINK(1)", endpoint="embeddings",
                     cost=Decimal("0.50"))
    make_request_log(world.b.org, model_requested="charlies-secret-model")
    return world


def usage(client, world, **query) -> str:
    client.force_login(world.alice)
    response = client.get(f"/orgs/{world.a.org.slug}/usage/", query)
    assert response.status_code == 200
    return response.content.decode()


def test_it_breaks_down_by_model_most_requests_first(usage_data, client):
    html = usage(client, usage_data)

    assert ROW_HEADER.findall(html)[:1] == ["gpt-4o-mini"]
    assert "charlies-secret-model" not in html
    assert "$2.00" in html


def test_it_sorts_by_a_column_both_ways(usage_data, client):
    by_cost = ROW_HEADER.findall(usage(client, usage_data, sort="cost", dir="desc"))
    assert by_cost == ["gpt-4o", "=HYPERLINK(1)", "gpt-4o-mini"]

    assert ROW_HEADER.findall(usage(client, usage_data, sort="cost", dir="asc")) == \
        by_cost[::-1]


def test_it_links_the_active_column_to_the_other_direction(usage_data, client):
    html = usage(client, usage_data, sort="cost", dir="desc")

    assert 'aria-sort="descending"' in html
    assert "sort=cost&amp;dir=asc" in html


@pytest.mark.parametrize("by,expected", [("api_key", "(deleted key)"),
                                         ("endpoint", "embeddings"), ("provider", "openai")])
def test_it_breaks_down_by_key_endpoint_and_provider(usage_data, client, by, expected):
    html = usage(client, usage_data, by=by)

    assert expected in ROW_HEADER.findall(html)
    if by == "api_key":
        key = ApiKey.objects.get(organization=usage_data.a.org)
        assert f"{key.prefix} (default)" in html


def test_it_exports_the_breakdown_as_csv(usage_data, client):
    client.force_login(usage_data.alice)

    response = client.get(f"/orgs/{usage_data.a.org.slug}/usage.csv",
                          {"by": "model", "sort": "cost", "period": "7d"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="org-a-usage-by-model-7d.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["model"] for row in rows] == ["gpt-4o", "'=HYPERLINK(1)", "gpt-4o-mini"]
    assert rows[0]["cost"] == "2.00000000"
    assert rows[2]["requests"] == "3"
    assert "charlies-secret-model" not in response.content.decode()
