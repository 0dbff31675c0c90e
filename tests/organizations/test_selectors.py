"""Reads through the organization that asks: a stranger's organization or key is an
error of the organizations app (the views and commands turn it into a 404 or a
CommandError), never another tenant's row."""

import pytest

from organizations.errors import ApiKeyNotFound, OrganizationNotChosen, OrganizationNotFound
from organizations.models import ApiKey
from organizations.selectors import (
    api_key_get_for_org,
    organization_for_member,
    organization_get_by_slug,
)
from organizations.services import membership_set, organization_create
from tests.conftest import make_user


def test_it_gives_a_member_their_organization_with_their_role(world):
    for_alice = organization_for_member(user=world.alice, slug=world.a.org.slug)
    for_bob = organization_for_member(user=world.bob, slug=world.a.org.slug)

    assert (for_alice, for_alice.member_role) == (world.a.org, "owner")
    assert (for_bob, for_bob.member_role) == (world.a.org, "member")


def test_it_checks_ownership(world):
    with pytest.raises(OrganizationNotFound):
        organization_for_member(user=world.charlie, slug=world.a.org.slug)
    with pytest.raises(OrganizationNotFound):
        organization_for_member(user=world.alice, slug=world.b.org.slug)


def test_it_answers_an_unknown_slug_as_a_strangers_one(world):
    with pytest.raises(OrganizationNotFound) as unknown:
        organization_for_member(user=world.alice, slug="no-such-org")
    with pytest.raises(OrganizationNotFound) as strangers:
        organization_for_member(user=world.alice, slug=world.b.org.slug)

    assert str(unknown.value) == str(strangers.value) == "No such organization"


def test_it_gives_the_only_organization_when_no_slug_is_named(world):
    found = organization_for_member(user=world.charlie)

    assert (found, found.member_role) == (world.b.org, "owner")


def test_it_asks_a_member_of_several_to_choose(world):
    membership_set(organization=world.b.org, user=world.bob, role="admin")

    with pytest.raises(OrganizationNotChosen):
        organization_for_member(user=world.bob)
    assert organization_for_member(user=world.bob, slug=world.b.org.slug).member_role == "admin"


def test_it_finds_nothing_for_a_user_in_no_organization(db):
    with pytest.raises(OrganizationNotFound):
        organization_for_member(user=make_user("dave"))


def test_it_gets_an_organization_by_slug_or_says_not_found(db):
    org = organization_create(name="Org C")

    assert organization_get_by_slug(slug=org.slug) == org
    with pytest.raises(OrganizationNotFound):
        organization_get_by_slug(slug="no-such-org")


def test_it_gets_a_key_only_through_its_own_organization(world):
    a_key = ApiKey.objects.get(organization=world.a.org)

    assert api_key_get_for_org(organization=world.a.org, key_id=a_key.pk) == a_key
    with pytest.raises(ApiKeyNotFound):
        api_key_get_for_org(organization=world.b.org, key_id=a_key.pk)
