"""Writes and checks for organizations, members, API keys and providers."""

import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet, RestrictedError
from django.utils import timezone
from django.utils.text import slugify

from organizations import crypto, keys
from organizations.errors import ProviderInUse
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
    expires_at: datetime | None = None,
    scope: str = ApiKey.Scope.PROXY,
) -> CreatedApiKey:
    """A new key, its raw form returned once. `expires_in` or `expires_at` (not both)
    makes it expire; the admin `scope` also lets it manage the organization (/api).

    Raises ValidationError on an unknown scope or both expiries."""
    if scope not in ApiKey.Scope.values:
        raise ValidationError(f"Unknown API key scope {scope!r}")
    if expires_in is not None:
        if expires_at is not None:
            raise ValidationError("Give expires_in or expires_at, not both")
        expires_at = timezone.now() + expires_in
    raw = keys.generate_key()
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name,
        prefix=keys.lookup_prefix(raw),
        key_hash=keys.hash_key(raw),
        scope=scope,
        created_by=created_by,
        expires_at=expires_at,
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


# Routes and commands write `NAME:MODEL`: no colon, no space, no leading "@" (an alias).
PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _provider_check(*, name: str, kind: str, base_url: str, api_version: str) -> str:
    """Raise ValidationError unless these make a valid provider; returns the base URL
    as stored (no trailing slash)."""
    if not PROVIDER_NAME.fullmatch(name):
        raise ValidationError(
            f"Invalid provider name {name!r}: up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    if kind not in Provider.Kind.values:
        raise ValidationError(f"Unknown provider kind {kind!r}: one of "
                              + ", ".join(Provider.Kind.values))
    if kind != Provider.Kind.AZURE and api_version:
        raise ValidationError("api_version applies to Azure OpenAI providers only")
    validate_upstream_base_url(
        base_url, allow_private=settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS
    )
    return base_url.rstrip("/")


def _providers_locked(organization: Organization, *, name: str,
                      exclude_pk: int | None = None) -> QuerySet[Provider]:
    """The organization's providers, its row locked so that writes deciding names and
    the default run one at a time (call inside atomic). Raises ValidationError when
    `name` is taken by another provider."""
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    providers = Provider.objects.filter(organization=organization)
    if providers.filter(name=name).exclude(pk=exclude_pk).exists():
        raise ValidationError(f"This organization already has a provider named {name!r}")
    return providers


def provider_validate(
    *,
    organization: Organization,
    name: str,
    kind: str,
    base_url: str,
    api_version: str = "",
    api_key: str | None = None,
    provider: Provider | None = None,
) -> None:
    """Raise ValidationError unless provider_add (or, given `provider`, provider_update
    of it) would take these: for forms, which show the problem before writing."""
    _provider_check(name=name, kind=kind, base_url=base_url, api_version=api_version)
    if provider is None and not api_key:
        raise ValidationError("A new provider needs an API key")
    taken = Provider.objects.filter(organization=organization, name=name)
    if taken.exclude(pk=provider.pk if provider else None).exists():
        raise ValidationError(f"This organization already has a provider named {name!r}")


def provider_add(
    *,
    organization: Organization,
    name: str,
    kind: str,
    base_url: str,
    api_key: str,
    api_version: str = "",
    enabled: bool = True,
    is_default: bool = False,
) -> Provider:
    """Add an upstream to the organization, its key encrypted. It becomes the default
    (the one that receives models without a route) when `is_default` is set or the
    organization has no default yet.

    Raises ValidationError on a bad name (or one taken), kind, URL or api_version, or
    an empty key."""
    base_url = _provider_check(name=name, kind=kind, base_url=base_url,
                               api_version=api_version)
    if not api_key:
        raise ValidationError("A new provider needs an API key")
    with transaction.atomic():
        defaults = _providers_locked(organization, name=name).filter(is_default=True)
        if is_default:
            defaults.update(is_default=False)
        else:
            is_default = not defaults.exists()
        return Provider.objects.create(
            organization=organization, name=name, kind=kind, base_url=base_url,
            api_key_encrypted=crypto.encrypt(api_key), api_key_last4=api_key[-4:],
            api_version=api_version, enabled=enabled, is_default=is_default,
        )


def provider_update(
    *,
    provider: Provider,
    name: str | None = None,
    kind: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    api_version: str | None = None,
    enabled: bool | None = None,
    is_default: bool | None = None,
) -> Provider:
    """Change what is given (None keeps a field; an empty `api_key` keeps the key).
    `is_default=True` moves the organization's default here; False leaves it without.

    Raises ValidationError as provider_add does."""
    changes: dict[str, object] = {
        field: value for field, value in {
            "name": name, "kind": kind, "base_url": base_url, "api_version": api_version,
            "enabled": enabled, "is_default": is_default,
        }.items() if value is not None
    }
    merged = {field: changes.get(field, getattr(provider, field))
              for field in ("name", "kind", "base_url", "api_version")}
    changes["base_url"] = _provider_check(**merged)
    if api_key:
        changes["api_key_encrypted"] = crypto.encrypt(api_key)
        changes["api_key_last4"] = api_key[-4:]
    with transaction.atomic():
        providers = _providers_locked(provider.organization, name=merged["name"],
                                      exclude_pk=provider.pk)
        if changes.get("is_default"):
            providers.filter(is_default=True).exclude(pk=provider.pk).update(is_default=False)
        for field, value in changes.items():
            setattr(provider, field, value)
        provider.save(update_fields=[*changes, "updated_at"])
    return provider


def provider_delete(*, provider: Provider) -> None:
    """Delete the provider. Raises ProviderInUse while a route targets it."""
    try:
        provider.delete()
    except RestrictedError as exc:
        routes = sorted({target.route.name for target in exc.restricted_objects})
        raise ProviderInUse(
            f"Provider {provider.name!r} is a target of the route(s) "
            + ", ".join(repr(name) for name in routes)
            + ": remove it from them first") from None


def provider_credential_set(
    *, organization: Organization, kind: str, base_url: str, api_key: str | None
) -> Provider:
    """Create or replace the organization's default provider (created as "default");
    `api_key=None` keeps the stored key. What the single-provider paths (set_provider,
    the tests) call.

    Raises ValidationError on a bad kind or URL, or a new provider without a key.
    """
    current = Provider.objects.filter(organization=organization, is_default=True).first()
    if current is None:
        if not api_key:
            raise ValidationError("A new provider credential needs an API key")
        return provider_add(organization=organization, name="default", kind=kind,
                            base_url=base_url, api_key=api_key, is_default=True)
    return provider_update(provider=current, kind=kind, base_url=base_url, api_key=api_key,
                           api_version=None if kind == Provider.Kind.AZURE else "")


def provider_credentials_rotate() -> int:
    """Re-encrypt every provider's key with the first configured key; returns the count."""
    count = 0
    with transaction.atomic():
        for provider in Provider.objects.select_for_update():
            provider.api_key_encrypted = crypto.rotate(provider.api_key_encrypted)
            provider.save(update_fields=["api_key_encrypted"])
            count += 1
    return count
