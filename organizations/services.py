"""Writes and checks for organizations, members, API keys and provider credentials."""

import hmac
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from organizations import crypto, keys
from organizations.models import ApiKey, Membership, Organization, Provider
from organizations.urlcheck import validate_upstream_base_url

# last_used_at is written at most this often per key, so hits do not write on every call.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def organization_create(*, name: str, slug: str | None = None) -> Organization:
    """Create an organization with a unique slug made from `slug` or `name`."""
    base = slugify(slug or name)[:70] or "org"
    n = 1
    while True:
        candidate = base if n == 1 else f"{base}-{n}"
        if not Organization.objects.filter(slug=candidate).exists():
            try:
                # The unique index decides when two creations race for the same slug.
                with transaction.atomic():
                    return Organization.objects.create(name=name, slug=candidate)
            except IntegrityError:
                pass
        n += 1


def membership_set(*, organization: Organization, user: AbstractBaseUser, role: str) -> Membership:
    """Give `user` this role in the organization; raises ValidationError on an unknown role."""
    # update_or_create does not validate choices: without this any string is stored.
    if role not in Membership.Role.values:
        raise ValidationError(f"Unknown role {role!r}")
    membership, _ = Membership.objects.update_or_create(
        organization=organization, user=user, defaults={"role": role}
    )
    return membership


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


def api_key_create(
    *,
    organization: Organization,
    name: str = "",
    created_by: AbstractBaseUser | None = None,
    expires_in: timedelta | None = None,
) -> CreatedApiKey:
    raw = keys.generate_key()
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name,
        prefix=keys.lookup_prefix(raw),
        key_hash=keys.hash_key(raw),
        created_by=created_by,
        expires_at=timezone.now() + expires_in if expires_in is not None else None,
    )
    return CreatedApiKey(api_key=api_key, raw_key=raw)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key. The gateway notices within COGNITUDE_API_KEY_CACHE_SECONDS."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


class AuthFailure(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_CHECKSUM = "bad_checksum"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class AuthResult:
    api_key: ApiKey | None
    failure: AuthFailure | None

    @property
    def ok(self) -> bool:
        return self.api_key is not None


def api_key_precheck(*, raw_key: str | None) -> AuthFailure | None:
    """Why `raw_key` cannot be a key, from its shape and checksum alone: no database, so
    garbage costs nothing (and never reaches a cache of answers)."""
    if not raw_key:
        return AuthFailure.MISSING
    if not keys.is_well_formed(raw_key):
        return AuthFailure.MALFORMED
    if not keys.has_valid_checksum(raw_key):
        return AuthFailure.BAD_CHECKSUM
    return None


def api_key_authenticate(*, raw_key: str | None) -> AuthResult:
    """The one way from an API key to its organization (`result.api_key.organization`,
    loaded with it): the gateway, /cache/* and the analytics API all come here. Finds
    the live key for `raw_key`, or says precisely why not (for logs; callers answer
    every failure with the same 401)."""
    failure = api_key_precheck(raw_key=raw_key)
    if failure is not None:
        return AuthResult(None, failure)
    api_key = (
        ApiKey.objects.select_related("organization")
        .filter(prefix=keys.lookup_prefix(raw_key))
        .first()
    )
    if api_key is None or not hmac.compare_digest(api_key.key_hash, keys.hash_key(raw_key)):
        return AuthResult(None, AuthFailure.UNKNOWN)
    now = timezone.now()
    if api_key.revoked_at is not None:
        return AuthResult(None, AuthFailure.REVOKED)
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return AuthResult(None, AuthFailure.EXPIRED)
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return AuthResult(api_key, None)


def provider_credential_set(
    *, organization: Organization, kind: str, base_url: str, api_key: str | None
) -> Provider:
    """Create or replace the organization's default provider (named "default" when
    created); `api_key=None` keeps the stored key.

    Raises ValidationError on a bad kind or URL, or a new provider without a key.
    """
    validate_upstream_base_url(
        base_url, allow_private=settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS
    )
    if kind not in Provider.Kind.values:
        raise ValidationError(f"Unknown provider kind {kind!r}")
    fields: dict[str, str] = {"kind": kind, "base_url": base_url.rstrip("/")}
    if api_key:
        fields["api_key_encrypted"] = crypto.encrypt(api_key)
        fields["api_key_last4"] = api_key[-4:]
    with transaction.atomic():
        provider = (Provider.objects.select_for_update()
                    .filter(organization=organization, is_default=True).first())
        if provider is None:
            if not api_key:
                raise ValidationError("A new provider credential needs an API key")
            return Provider.objects.create(organization=organization, name="default",
                                           is_default=True, **fields)
        for name, value in fields.items():
            setattr(provider, name, value)
        provider.save(update_fields=[*fields, "updated_at"])
    return provider


def provider_credentials_rotate() -> int:
    """Re-encrypt every provider key with the first configured key; returns the count."""
    count = 0
    with transaction.atomic():
        for provider in Provider.objects.select_for_update():
            provider.api_key_encrypted = crypto.rotate(provider.api_key_encrypted)
            provider.save(update_fields=["api_key_encrypted"])
            count += 1
    return count
