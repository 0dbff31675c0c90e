"""Reads, always through the organization that asks."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from organizations import crypto
from organizations.models import ApiKey, Organization, ProviderCredential


def organizations_for_user(*, user: AbstractBaseUser) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def organization_get_by_slug(*, slug: str) -> Organization:
    try:
        return Organization.objects.get(slug=slug)
    except Organization.DoesNotExist:
        raise Http404("No such organization") from None


def api_keys_for_org(*, organization: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(organization=organization).order_by("-created_at")


def api_key_get_for_org(*, organization: Organization, key_id: int) -> ApiKey:
    """The key `key_id` of this organization; 404 for anyone else's."""
    try:
        return ApiKey.objects.get(organization=organization, pk=key_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such API key") from None


def provider_for_org(*, organization: Organization) -> ProviderCredential | None:
    return ProviderCredential.objects.filter(organization=organization).first()


def provider_api_key(*, credential: ProviderCredential) -> str:
    """The plaintext provider key; raises CredentialDecryptionError with a wrong key."""
    return crypto.decrypt(credential.api_key_encrypted)
