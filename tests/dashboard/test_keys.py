"""API keys: created with the raw key shown once, listed by prefix, revoked."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from organizations.models import ApiKey
from organizations.services import AuthFailure, api_key_authenticate
from tests.dashboard.helpers import ANY_RAW_KEY

pytestmark = pytest.mark.django_db
RAW_KEY_ON_PAGE = re.compile(r'<code id="raw-key">(cog_[0-9A-Za-z]{38})</code>')


def create_key(client, world, **data) -> tuple:
    client.force_login(world.alice)
    response = client.post(f"/orgs/{world.a.org.slug}/keys/new/",
                           {"name": "", "expires_in_days": "", **data})
    assert response.status_code == 200
    html = response.content.decode()
    match = RAW_KEY_ON_PAGE.search(html)
    assert match, html
    return response, html, match.group(1)


def test_it_shows_a_new_key_once_with_a_warning_and_a_copy_button(world, client):
    response, html, raw_key = create_key(client, world, name="checkout")

    assert html.count(raw_key) == 1
    assert "shown only once" in html
    assert 'data-copy="raw-key"' in html
    assert "no-store" in response["Cache-Control"]
    result = api_key_authenticate(raw_key=raw_key)
    assert result.ok
    assert result.api_key.organization == world.a.org
    assert result.api_key.name == "checkout"
    assert result.api_key.created_by == world.alice


def test_it_never_keeps_the_raw_key_anywhere_a_later_page_could_read(world, client):
    _, _, raw_key = create_key(client, world)

    later = client.get(f"/orgs/{world.a.org.slug}/keys/").content.decode()

    assert ANY_RAW_KEY.search(later) is None
    assert raw_key not in str(dict(client.session.items()))
    assert all(raw_key not in cookie.value for cookie in client.cookies.values())
    assert raw_key not in str(list(ApiKey.objects.values_list()))


def test_it_sets_the_expiry(world, client):
    _, _, raw_key = create_key(client, world, expires_in_days="30")

    api_key = api_key_authenticate(raw_key=raw_key).api_key
    expected = timezone.now() + timedelta(days=30)
    assert abs((api_key.expires_at - expected).total_seconds()) < 60


def test_it_makes_proxy_keys_unless_admin_is_chosen(world, client):
    _, _, proxy = create_key(client, world)
    _, _, admin = create_key(client, world, scope="admin")

    assert api_key_authenticate(raw_key=proxy).api_key.scope == "proxy"
    assert api_key_authenticate(raw_key=admin).api_key.scope == "admin"
    page = client.get(f"/orgs/{world.a.org.slug}/keys/").content.decode()
    assert page.count('<span class="badge">Admin</span>') == 1
    response = client.post(f"/orgs/{world.a.org.slug}/keys/new/", {"scope": "root"})
    assert response.status_code == 400


def test_it_refuses_an_expiry_that_is_not_offered(world, client):
    client.force_login(world.alice)

    response = client.post(f"/orgs/{world.a.org.slug}/keys/new/",
                           {"name": "x", "expires_in_days": "-5"})

    assert response.status_code == 400
    assert ApiKey.objects.filter(organization=world.a.org).count() == 1


def test_it_lists_keys_by_prefix_with_last_use_expiry_and_status(world, client):
    live = ApiKey.objects.get(organization=world.a.org)
    api_key_authenticate(raw_key=world.a.raw_key)  # marks it used
    create_key(client, world, name="short-lived", expires_in_days="7")
    ApiKey.objects.filter(name="short-lived").update(expires_at=timezone.now())

    html = client.get(f"/orgs/{world.a.org.slug}/keys/").content.decode()

    assert f"<code>{live.prefix}…</code>" in html
    assert "just now" in html  # last used
    assert "Expired" in html and "Active" in html
    assert ANY_RAW_KEY.search(html) is None
    assert "Org B" not in html


def test_it_revokes_a_key(world, client):
    api_key = ApiKey.objects.get(organization=world.a.org)
    client.force_login(world.alice)

    response = client.post(f"/orgs/{world.a.org.slug}/keys/{api_key.pk}/revoke/",
                           follow=True)

    assert response.redirect_chain[-1][0] == f"/orgs/{world.a.org.slug}/keys/"
    html = response.content.decode()
    assert f"Revoked {api_key.prefix}" in html
    assert "Revoked</span>" in html
    assert api_key_authenticate(raw_key=world.a.raw_key).failure == AuthFailure.REVOKED


def test_it_only_revokes_with_post(world, client):
    api_key = ApiKey.objects.get(organization=world.a.org)
    client.force_login(world.alice)

    response = client.get(f"/orgs/{world.a.org.slug}/keys/{api_key.pk}/revoke/")

    assert response.status_code == 405
    assert api_key_authenticate(raw_key=world.a.raw_key).ok
