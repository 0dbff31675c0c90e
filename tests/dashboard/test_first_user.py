"""The README's way to the first dashboard user: createsuperuser, then add_member."""

from io import StringIO

import pytest
from django.core.management import call_command

from organizations.models import Membership
from organizations.services import organization_create

pytestmark = pytest.mark.django_db


def test_it_lets_the_superuser_become_the_first_owner(client, monkeypatch):
    org = organization_create(name="Demo", slug="demo")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-first-password-1")
    call_command("createsuperuser", "--noinput", "--username", "ops",
                 "--email", "ops@example.com", stdout=StringIO())

    out = StringIO()
    call_command("add_member", "--org", "demo", "--email", "ops@example.com", "--role",
                 "owner", stdout=out)

    assert out.getvalue().strip() == "ops@example.com is owner of demo"
    response = client.post("/accounts/login/", {"username": "ops",
                                                 "password": "a-long-first-password-1"},
                           follow=True)
    assert response.redirect_chain[-1][0] == "/orgs/demo/"
    assert 'href="/admin/"' in response.content.decode()
    assert Membership.objects.get(organization=org).role == "owner"


def test_it_says_how_a_new_member_gets_a_password(client):
    organization_create(name="Demo", slug="demo")
    out = StringIO()

    call_command("add_member", "--org", "demo", "--email", "new@example.com", stdout=out)

    assert "python manage.py changepassword new@example.com" in out.getvalue()
    assert out.getvalue().strip().splitlines()[-1] == "new@example.com is member of demo"
    assert client.post("/accounts/login/", {"username": "new@example.com",
                                            "password": ""}).status_code == 200
