"""The Audit page: owners and admins see who changed what, members and strangers do not."""

import pytest

from organizations.models import Provider
from organizations.services import Actor, api_key_create, provider_update
from tests.organizations.apiclients import session_for

pytestmark = pytest.mark.django_db


def test_it_shows_owners_who_changed_what(world):
    provider = Provider.objects.get(organization=world.a.org)
    provider_update(provider=provider, enabled=False, actor=Actor.of_user(world.alice))
    api_key_create(organization=world.b.org, name="charlies-key",
                   actor=Actor.of_user(world.charlie))

    page = session_for(world.alice).get(f"/orgs/{world.a.org.slug}/audit/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "provider.update" in html and "<strong>enabled</strong>: True → False" in html
    assert "charlies-key" not in html
    assert world.a.provider_key not in html and world.a.raw_key not in html
    assert 'aria-current="page">Audit</a>' in html


def test_it_keeps_the_page_from_members_and_strangers(world):
    assert session_for(world.bob).get(f"/orgs/{world.a.org.slug}/audit/").status_code == 403
    assert ">Audit</a>" not in session_for(world.bob).get(
        f"/orgs/{world.a.org.slug}/").content.decode()
    assert session_for(world.charlie).get(
        f"/orgs/{world.a.org.slug}/audit/").status_code == 404
