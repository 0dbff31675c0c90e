"""Organizations, memberships, API keys and provider credentials through their services."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from organizations import keys
from organizations.models import ApiKey, Membership, Provider
from organizations.selectors import organizations_for_user, provider_api_key
from organizations.services import (
    LAST_USED_RESOLUTION,
    AuthFailure,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    membership_set,
    organization_create,
    provider_credential_set,
)


def same_prefix_forgery(raw: str) -> str:
    """A well-formed key with a valid checksum that shares `raw`'s visible prefix:
    what someone who read a key list could build."""
    body = raw[4:12] + "Z" * 24 if raw[12:36] != "Z" * 24 else raw[4:12] + "Y" * 24
    return keys.PREFIX + body + keys._checksum(body)


# --- api_key_authenticate -----------------------------------------------------------------

def test_it_authenticates_a_good_key_to_its_own_organization(world):
    a = api_key_authenticate(raw_key=world.a.raw_key)
    b = api_key_authenticate(raw_key=world.b.raw_key)

    assert a.ok and a.failure is None
    assert a.api_key.organization == world.a.org
    assert b.ok
    assert b.api_key.organization == world.b.org


@pytest.mark.parametrize("raw_key", [None, ""])
def test_it_says_missing_without_a_key(db, django_assert_num_queries, raw_key):
    with django_assert_num_queries(0):
        result = api_key_authenticate(raw_key=raw_key)

    assert not result.ok
    assert result.api_key is None
    assert result.failure is AuthFailure.MISSING


@pytest.mark.parametrize("raw_key", [
    "sk-proj-abcdef",
    "cog_tooshort",
    "cog_" + "A" * 39,
    "cog_" + "A" * 31 + "-" + "A" * 6,
    "Bearer cog_" + "A" * 38,
])
def test_it_says_malformed_without_a_query(db, django_assert_num_queries, raw_key):
    with django_assert_num_queries(0):
        result = api_key_authenticate(raw_key=raw_key)

    assert not result.ok
    assert result.failure is AuthFailure.MALFORMED


def test_it_says_bad_checksum_without_a_query(world, django_assert_num_queries):
    raw = world.a.raw_key
    flipped = raw[:20] + ("a" if raw[20] != "a" else "b") + raw[21:]

    with django_assert_num_queries(0):
        result = api_key_authenticate(raw_key=flipped)

    assert not result.ok
    assert result.failure is AuthFailure.BAD_CHECKSUM


def test_it_says_unknown_for_a_valid_key_nobody_issued(world):
    result = api_key_authenticate(raw_key=keys.generate_key())

    assert not result.ok
    assert result.failure is AuthFailure.UNKNOWN


def test_it_says_unknown_for_a_forged_key_with_a_real_prefix(world):
    forged = same_prefix_forgery(world.a.raw_key)
    assert keys.has_valid_checksum(forged)
    assert keys.lookup_prefix(forged) == keys.lookup_prefix(world.a.raw_key)

    result = api_key_authenticate(raw_key=forged)

    assert not result.ok
    assert result.failure is AuthFailure.UNKNOWN


def test_it_says_revoked_for_a_revoked_key(world):
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))

    api_key_revoke(api_key=api_key)
    result = api_key_authenticate(raw_key=world.a.raw_key)

    assert not result.ok
    assert result.failure is AuthFailure.REVOKED
    # Org B's key is untouched.
    assert api_key_authenticate(raw_key=world.b.raw_key).ok


def test_it_keeps_the_first_revocation_time(world):
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))
    first = api_key_revoke(api_key=api_key).revoked_at

    again = api_key_revoke(api_key=ApiKey.objects.get(pk=api_key.pk))

    assert again.revoked_at == first
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at == first


def test_it_says_expired_for_an_expired_key(world):
    created = api_key_create(organization=world.a.org, name="short-lived",
                             expires_in=timedelta(days=1))
    assert api_key_authenticate(raw_key=created.raw_key).ok

    ApiKey.objects.filter(pk=created.api_key.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    result = api_key_authenticate(raw_key=created.raw_key)

    assert not result.ok
    assert result.failure is AuthFailure.EXPIRED


def test_it_sets_the_expiry_from_expires_in(world):
    before = timezone.now()
    created = api_key_create(organization=world.a.org, expires_in=timedelta(days=30))

    stored = ApiKey.objects.get(pk=created.api_key.pk)
    assert before + timedelta(days=30) <= stored.expires_at <= timezone.now() + timedelta(days=30)


def test_it_stores_only_the_prefix_and_hash(world):
    created = api_key_create(organization=world.a.org, name="ci", created_by=world.alice)

    stored = ApiKey.objects.get(pk=created.api_key.pk)
    assert stored.prefix == created.raw_key[:12]
    assert stored.key_hash == keys.hash_key(created.raw_key)
    assert created.raw_key not in {getattr(stored, f.attname) for f in ApiKey._meta.fields}
    assert stored.created_by == world.alice
    assert stored.name == "ci"
    assert stored.expires_at is None


def test_it_records_last_use(world):
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))
    assert api_key.last_used_at is None
    before = timezone.now()

    api_key_authenticate(raw_key=world.a.raw_key)

    api_key.refresh_from_db()
    assert before <= api_key.last_used_at <= timezone.now()


def test_it_writes_last_use_at_most_once_a_minute(world, django_assert_num_queries):
    api_key_authenticate(raw_key=world.a.raw_key)

    # Within the resolution: the lookup and no write.
    with django_assert_num_queries(1):
        assert api_key_authenticate(raw_key=world.a.raw_key).ok

    stale = timezone.now() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    ApiKey.objects.filter(prefix=keys.lookup_prefix(world.a.raw_key)).update(last_used_at=stale)
    with django_assert_num_queries(2):
        assert api_key_authenticate(raw_key=world.a.raw_key).ok
    assert ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key)).last_used_at > stale


def test_it_does_not_record_use_of_a_refused_key(world):
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))
    api_key_revoke(api_key=api_key)

    api_key_authenticate(raw_key=world.a.raw_key)
    api_key_authenticate(raw_key=same_prefix_forgery(world.a.raw_key))

    api_key.refresh_from_db()
    assert api_key.last_used_at is None


# --- organization_create ------------------------------------------------------------------

def test_it_makes_unique_slugs(db):
    first = organization_create(name="Acme Labs")
    second = organization_create(name="Acme Labs")
    third = organization_create(name="acme labs!")

    assert [first.slug, second.slug, third.slug] == ["acme-labs", "acme-labs-2", "acme-labs-3"]
    assert second.name == "Acme Labs"


def test_it_uses_a_requested_slug_or_the_next_free_one(db):
    assert organization_create(name="Acme", slug="Team Rocket").slug == "team-rocket"
    assert organization_create(name="Other", slug="team-rocket").slug == "team-rocket-2"


def test_it_makes_a_slug_from_any_name(db):
    assert organization_create(name="日本語").slug == "org"
    assert organization_create(name="!!!").slug == "org-2"
    long = organization_create(name="x" * 200)
    assert long.slug == "x" * 70
    assert organization_create(name="x" * 200).slug == "x" * 70 + "-2"


# --- memberships --------------------------------------------------------------------------

def test_it_gives_each_member_a_role(world):
    roles = {
        (m.user.username, m.organization.slug): m.role
        for m in Membership.objects.select_related("user", "organization")
    }

    assert roles == {
        ("alice", world.a.org.slug): "owner",
        ("bob", world.a.org.slug): "member",
        ("charlie", world.b.org.slug): "owner",
    }
    assert list(organizations_for_user(user=world.bob)) == [world.a.org]
    assert list(organizations_for_user(user=world.charlie)) == [world.b.org]


def test_it_changes_a_role_without_a_second_membership(world):
    membership = membership_set(organization=world.a.org, user=world.bob,
                                role=Membership.Role.ADMIN)

    assert membership.role == "admin"
    assert Membership.objects.filter(user=world.bob).count() == 1
    assert Membership.objects.get(user=world.bob, organization=world.a.org).role == "admin"


def test_it_lets_a_user_join_a_second_organization(world):
    membership_set(organization=world.b.org, user=world.bob, role=Membership.Role.MEMBER)

    assert list(organizations_for_user(user=world.bob)) == [world.a.org, world.b.org]
    assert Membership.objects.get(user=world.bob, organization=world.a.org).role == "member"


@pytest.mark.parametrize("role", ["god", "", "Owner"])
def test_it_refuses_an_unknown_role(world, role):
    with pytest.raises(ValidationError, match="Unknown role"):
        membership_set(organization=world.a.org, user=world.bob, role=role)
    with pytest.raises(ValidationError, match="Unknown role"):
        membership_set(organization=world.b.org, user=world.bob, role=role)

    assert Membership.objects.get(user=world.bob, organization=world.a.org).role == "member"
    assert not Membership.objects.filter(user=world.bob, organization=world.b.org).exists()


# --- provider_credential_set --------------------------------------------------------------

def test_it_creates_an_encrypted_provider_credential(world, fake_upstream):
    org = organization_create(name="Org C")

    credential = provider_credential_set(
        organization=org, kind="openai", base_url=fake_upstream.api_base + "/",
        api_key="sk-org-c-secret-9876",
    )

    stored = Provider.objects.get(organization=org)
    assert stored.pk == credential.pk
    assert stored.base_url == fake_upstream.api_base
    assert stored.api_key_last4 == "9876"
    assert "sk-org-c-secret-9876" not in stored.api_key_encrypted
    assert provider_api_key(credential=stored) == "sk-org-c-secret-9876"


def test_it_replaces_the_provider_credential(world, fake_upstream):
    provider_credential_set(organization=world.a.org, kind="openai",
                            base_url="http://127.0.0.1:9/v1", api_key="sk-replacement-1111")

    [stored] = Provider.objects.filter(organization=world.a.org)
    assert stored.base_url == "http://127.0.0.1:9/v1"
    assert stored.api_key_last4 == "1111"
    assert provider_api_key(credential=stored) == "sk-replacement-1111"
    # Org B's credential is untouched.
    other = Provider.objects.get(organization=world.b.org)
    assert provider_api_key(credential=other) == world.b.provider_key


@pytest.mark.parametrize("empty", [None, ""])
def test_it_keeps_the_stored_key_when_none_is_given(world, empty):
    before = Provider.objects.get(organization=world.a.org)

    provider_credential_set(organization=world.a.org, kind="openai",
                            base_url="http://127.0.0.1:9/v2", api_key=empty)

    stored = Provider.objects.get(organization=world.a.org)
    assert stored.base_url == "http://127.0.0.1:9/v2"
    assert stored.api_key_encrypted == before.api_key_encrypted
    assert stored.api_key_last4 == world.a.provider_key[-4:]
    assert provider_api_key(credential=stored) == world.a.provider_key


def test_it_refuses_a_new_credential_without_a_key(world, fake_upstream):
    org = organization_create(name="Org C")

    with pytest.raises(ValidationError, match="needs an API key"):
        provider_credential_set(organization=org, kind="openai",
                                base_url=fake_upstream.api_base, api_key=None)

    assert not Provider.objects.filter(organization=org).exists()


@pytest.mark.parametrize("kind", ["claude", "", "OPENAI"])
def test_it_refuses_an_unknown_kind(world, fake_upstream, kind):
    before = Provider.objects.get(organization=world.a.org)

    with pytest.raises(ValidationError, match="Unknown provider kind"):
        provider_credential_set(organization=world.a.org, kind=kind,
                                base_url=fake_upstream.api_base, api_key="sk-new-key-0000")

    stored = Provider.objects.get(organization=world.a.org)
    assert (stored.kind, stored.api_key_encrypted) == ("openai", before.api_key_encrypted)



def test_it_makes_a_zero_length_expiry_an_expired_key(world):
    created = api_key_create(organization=world.a.org, expires_in=timedelta(0))
    assert api_key_authenticate(raw_key=created.raw_key).failure == AuthFailure.EXPIRED
