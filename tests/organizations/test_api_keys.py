"""/api/keys: API keys through the management API: created with the raw key shown once,
listed, revoked, expiring; scoped proxy or admin."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from organizations import keys
from organizations.models import ApiKey
from organizations.services import AuthFailure, api_key_authenticate, api_key_create
from tests.organizations.apiclients import (
    admin_key_client,
    assert_error,
    key_client,
    session_for,
)

pytestmark = pytest.mark.django_db

LIST = "/api/keys"


def detail(api_key: ApiKey) -> str:
    return f"/api/keys/{api_key.pk}"


def create(client, **body):
    return client.post(LIST, body, content_type="application/json")


def test_it_creates_a_key_and_shows_it_only_in_that_answer(world):
    client = admin_key_client(world.a.org)

    response = create(client, name="ci", scope="admin")

    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    raw = body["key"]
    assert (body["name"], body["scope"], body["status"], body["expires_at"]) == (
        "ci", "admin", "active", None)
    assert body["prefix"] == keys.lookup_prefix(raw)
    result = api_key_authenticate(raw_key=raw)
    assert result.api_key.organization == world.a.org and result.api_key.scope == "admin"
    # Never again: not in the list, not in the key's own page.
    api_key = ApiKey.objects.get(pk=body["id"])
    for later in (client.get(LIST), client.get(detail(api_key))):
        assert later.status_code == 200
        assert raw not in later.content.decode()
        assert raw[keys.LOOKUP_PREFIX_LENGTH:] not in later.content.decode()
    assert "key" not in client.get(detail(api_key)).json()


def test_it_makes_proxy_keys_by_default_which_cannot_manage(world):
    body = create(session_for(world.alice)).json()

    assert body["scope"] == "proxy"
    assert ApiKey.objects.get(pk=body["id"]).created_by == world.alice
    assert_error(key_client(body["key"]).get(LIST), 403, "proxy scope")


def test_it_lets_an_admin_key_manage_as_a_session_does(world):
    admin = create(session_for(world.alice), scope="admin").json()["key"]

    response = create(key_client(admin), name="made-by-key")

    assert response.status_code == 201
    assert ApiKey.objects.get(pk=response.json()["id"]).created_by is None


def test_it_sets_an_expiry(world):
    client = admin_key_client(world.a.org)
    at = (timezone.now() + timedelta(days=2)).replace(microsecond=0)

    in_days = create(client, expires_in_days=30).json()
    at_time = create(client, expires_at=at.isoformat()).json()

    expected = timezone.now() + timedelta(days=30)
    assert abs(parse_datetime(in_days["expires_at"]) - expected) < timedelta(minutes=1)
    assert parse_datetime(at_time["expires_at"]) == at


@pytest.mark.parametrize("body,words,param", [
    ({"scope": "root"}, ["scope", "proxy, admin", "root"], "scope"),
    ({"expires_in_days": 0}, ["expires_in_days", "greater than or equal to 1"],
     "expires_in_days"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, ["expires_at: must be in the future"],
     "expires_at"),
    ({"expires_at": "next week"}, ["expires_at", "wrong format"], "expires_at"),
    ({"expires_in_days": 3, "expires_at": "2099-01-01T00:00:00Z"},
     ["expires_at or expires_in_days, not both"], None),
    ({"name": "x" * 101}, ["name", "no more than 100"], "name"),
])
def test_it_refuses_bad_input_clearly(world, body, words, param):
    before = ApiKey.objects.count()

    response = create(admin_key_client(world.a.org), **body)

    assert_error(response, 400, *words, param=param)
    assert ApiKey.objects.count() == before + 1  # only the admin key the test made


@pytest.mark.parametrize("how", ["delete", "post"])
def test_it_revokes_a_key(world, how):
    client = admin_key_client(world.a.org)
    victim = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))

    if how == "delete":
        response = client.delete(detail(victim))
    else:
        response = client.post(f"{detail(victim)}/revoke")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "revoked"
    assert ApiKey.objects.get(pk=victim.pk).revoked_at is not None
    assert api_key_authenticate(raw_key=world.a.raw_key).failure is AuthFailure.REVOKED
    # The key stays listed, revoked.
    listed = {k["id"]: k["status"] for k in client.get(LIST).json()}
    assert listed[victim.pk] == "revoked"


def test_it_says_a_key_has_expired(world):
    expired = api_key_create(organization=world.a.org, expires_in=timedelta(0)).api_key

    body = admin_key_client(world.a.org).get(detail(expired)).json()

    assert body["status"] == "expired"


def test_it_lets_a_member_read_but_not_create_or_revoke(world):
    client = session_for(world.bob)
    victim = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))

    assert client.get(LIST).status_code == 200
    assert_error(create(client), 403, "Only an owner or admin")
    assert_error(client.delete(detail(victim)), 403)
    assert_error(client.post(f"{detail(victim)}/revoke"), 403)
    assert ApiKey.objects.get(pk=victim.pk).revoked_at is None


def test_it_refuses_a_proxy_scoped_key_on_every_operation(world):
    client = key_client(world.a.raw_key)
    mine = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))

    for response in (client.get(LIST), create(client), client.get(detail(mine)),
                     client.delete(detail(mine)), client.post(f"{detail(mine)}/revoke")):
        assert_error(response, 403, "proxy scope")
    assert ApiKey.objects.get(pk=mine.pk).revoked_at is None


def test_it_checks_ownership(world):
    theirs = ApiKey.objects.get(prefix=keys.lookup_prefix(world.b.raw_key))
    for client in (session_for(world.alice), admin_key_client(world.a.org)):
        assert_error(client.get(detail(theirs)), 404, "No such API key")
        assert_error(client.delete(detail(theirs)), 404)
        assert_error(client.post(f"{detail(theirs)}/revoke"), 404)
        assert_error(client.get(LIST, {"org": world.b.org.slug}), 404)
        assert_error(client.post(f"{LIST}?org={world.b.org.slug}", {},
                                 content_type="application/json"), 404)
        assert theirs.prefix not in client.get(LIST).content.decode()
    assert api_key_authenticate(raw_key=world.b.raw_key).ok
    assert ApiKey.objects.filter(organization=world.b.org).count() == 1
