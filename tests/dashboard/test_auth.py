"""Signing in and out, changing the password, and finding one's organizations."""

import pytest
from django.test import Client

from organizations.services import membership_set, organization_create

pytestmark = pytest.mark.django_db


def test_it_logs_in_and_lands_on_the_first_organization(world, client):
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"},
                           follow=True)

    assert response.redirect_chain == [("/", 302), (f"/orgs/{world.a.org.slug}/", 302)]
    assert "Overview" in response.content.decode()


def test_it_goes_back_to_the_page_asked_for(world, client):
    target = f"/orgs/{world.a.org.slug}/keys/"

    response = client.post(f"/accounts/login/?next={target}",
                           {"username": "bob", "password": "pw-bob", "next": target})

    assert response["Location"] == target


def test_it_refuses_a_wrong_password(world, client):
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})

    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_logs_out_with_post(world, client):
    client.force_login(world.alice)

    response = client.post("/accounts/logout/")

    assert response["Location"] == "/accounts/login/"
    assert client.get(f"/orgs/{world.a.org.slug}/").status_code == 302


def test_it_changes_the_password(world, client):
    client.force_login(world.alice)

    response = client.post("/accounts/password/", {
        "old_password": "pw-alice", "new_password1": "correct-horse-battery-9",
        "new_password2": "correct-horse-battery-9"}, follow=True)

    assert "Password changed" in response.content.decode()
    world.alice.refresh_from_db()
    assert world.alice.check_password("correct-horse-battery-9")
    # This session stays logged in.
    assert client.get(f"/orgs/{world.a.org.slug}/").status_code == 200


def test_it_explains_an_account_without_organizations(db, client):
    from tests.conftest import make_user

    client.force_login(make_user("dave"))

    response = client.get("/")

    assert response.status_code == 200
    assert "No organization yet" in response.content.decode()


def test_it_offers_a_switcher_to_members_of_several_organizations(world, client):
    membership_set(organization=world.b.org, user=world.alice, role="member")
    client.force_login(world.alice)

    html = client.get(f"/orgs/{world.a.org.slug}/usage/").content.decode()

    assert 'class="switcher"' in html
    # The switcher keeps the section: from A's usage to B's usage.
    assert f'href="/orgs/{world.b.org.slug}/usage/"' in html


def test_it_shows_no_switcher_with_one_organization(world, client):
    organization_create(name="Not bobs")
    client.force_login(world.bob)

    html = client.get(f"/orgs/{world.a.org.slug}/").content.decode()

    assert 'class="switcher"' not in html
    assert "Not bobs" not in html and "Org B" not in html


def test_it_links_staff_to_the_admin_and_the_admin_back(world, client):
    client.force_login(world.bob)
    assert 'href="/admin/"' not in client.get(f"/orgs/{world.a.org.slug}/").content.decode()

    world.alice.is_staff = world.alice.is_superuser = True
    world.alice.save(update_fields=["is_staff", "is_superuser"])
    staff = Client()
    staff.force_login(world.alice)
    assert 'href="/admin/"' in staff.get(f"/orgs/{world.a.org.slug}/").content.decode()
    # Django admin's "View site" link goes to the site root, the dashboard.
    assert 'href="/"' in staff.get("/admin/").content.decode()
