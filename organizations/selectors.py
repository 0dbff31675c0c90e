"""Reads, always through the organization that asks."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, QuerySet

from organizations import crypto
from organizations.errors import (
    ApiKeyNotFound,
    OrganizationNotChosen,
    OrganizationNotFound,
    ProviderNotFound,
)
from organizations.models import ApiKey, AuditEntry, Membership, Organization, Provider

MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


def organizations_for_user(*, user: AbstractBaseUser) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def organization_for_member(*, user: AbstractBaseUser, slug: str | None = None) -> Organization:
    """The organization `slug` if `user` is a member of it; without a slug, the user's
    only organization. The user's role comes along as `member_role`.

    Raises OrganizationNotFound for anyone else's (or when the user has none) and
    OrganizationNotChosen when no slug is given to a member of several."""
    # The annotation follows the filter, so it reads this user's membership row.
    mine = organizations_for_user(user=user).annotate(member_role=F("memberships__role"))
    if slug is not None:
        mine = mine.filter(slug=slug)
    found = list(mine[:2])
    if not found:
        raise OrganizationNotFound("No such organization")
    if len(found) > 1:
        raise OrganizationNotChosen("You are a member of several organizations")
    return found[0]


def member_can_manage(*, organization: Organization) -> bool:
    """True when the member who loaded it (organization_for_member) is owner or admin."""
    return getattr(organization, "member_role", None) in MANAGER_ROLES


def organization_get_by_slug(*, slug: str) -> Organization:
    """Raises OrganizationNotFound."""
    try:
        return Organization.objects.get(slug=slug)
    except Organization.DoesNotExist:
        raise OrganizationNotFound("No such organization") from None


def api_keys_for_org(*, organization: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(organization=organization).order_by("-created_at")


def api_key_get_for_org(*, organization: Organization, key_id: int) -> ApiKey:
    """The key `key_id` of this organization; ApiKeyNotFound for anyone else's."""
    try:
        return ApiKey.objects.get(organization=organization, pk=key_id)
    except ApiKey.DoesNotExist:
        raise ApiKeyNotFound("No such API key") from None


def providers_for_org(*, organization: Organization) -> QuerySet[Provider]:
    """The organization's providers, the default first, then by name."""
    return Provider.objects.filter(organization=organization).order_by("-is_default", "name")


def provider_get_for_org(*, organization: Organization, provider_id: int) -> Provider:
    """The provider `provider_id` of this organization; ProviderNotFound for anyone else's."""
    try:
        return Provider.objects.get(organization=organization, pk=provider_id)
    except Provider.DoesNotExist:
        raise ProviderNotFound("No such provider") from None


def provider_get_by_name(*, organization: Organization, name: str) -> Provider:
    """The organization's provider called `name`; ProviderNotFound if it has none."""
    try:
        return Provider.objects.get(organization=organization, name=name)
    except Provider.DoesNotExist:
        raise ProviderNotFound(f"No provider named {name!r} in this organization") from None


def provider_for_org(*, organization: Organization) -> Provider | None:
    """The organization's default provider, if it has one and it is enabled."""
    return Provider.objects.filter(organization=organization, is_default=True,
                                   enabled=True).first()


def provider_api_key(*, credential: Provider) -> str:
    """The plaintext provider key; raises CredentialDecryptionError with a wrong key."""
    return crypto.decrypt(credential.api_key_encrypted)


def audit_entries_for_org(*, organization: Organization) -> QuerySet[AuditEntry]:
    """The organization's audit trail, newest first (the org-and-time index serves it)."""
    return (AuditEntry.objects.filter(organization=organization)
            .select_related("actor_user", "actor_api_key").order_by("-created_at", "-pk"))
