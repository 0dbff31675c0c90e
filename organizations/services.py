"""Writes and checks for organizations, members, API keys and providers."""

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import Q, QuerySet, RestrictedError
from django.utils import timezone
from django.utils.text import slugify

from organizations import crypto, keys
from organizations.errors import ProviderInUse
from organizations.models import ApiKey, AuditEntry, Membership, Organization, Provider
from organizations.urlcheck import validate_upstream_base_url

# last_used_at is written at most this often per key (COGNITUDE_API_KEY_LAST_USED_SECONDS,
# read at import: settings do not change in a running process), so traffic does not write.
LAST_USED_RESOLUTION = timedelta(seconds=settings.COGNITUDE_API_KEY_LAST_USED_SECONDS)


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a user (dashboard, admin, the API with a session), an API key
    (the API with an admin-scoped key), or neither (a command, a task), named by `label`."""

    label: str
    user: AbstractBaseUser | None = None
    api_key: ApiKey | None = None

    @classmethod
    def of_user(cls, user: AbstractBaseUser) -> "Actor":
        return cls(label=user.get_username(), user=user)

    @classmethod
    def of_api_key(cls, api_key: ApiKey) -> "Actor":
        return cls(label=f"API key {api_key.prefix}", api_key=api_key)

    @classmethod
    def of_request(cls, request: Any) -> "Actor":
        """The caller of a Django or DRF request: its API key (DRF's `request.auth`)
        or its user."""
        api_key = getattr(request, "auth", None)
        if isinstance(api_key, ApiKey):
            return cls.of_api_key(api_key)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls.of_user(user)
        return cls(label="anonymous")


# Never in an audit entry, at any depth: what leaks a credential if the trail is read.
SECRET_FIELD = re.compile(r"(^|_)(api_key|api_key_encrypted|key_hash|password|secret|token"
                          r"|raw_key|authorization|webhook_url)$|^key$", re.IGNORECASE)


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _without_secrets(item) for name, item in value.items()
                if not SECRET_FIELD.search(str(name))}
    if isinstance(value, list | tuple):
        return [_without_secrets(item) for item in value]
    return value


def audit_values(instance: models.Model | None, fields: Iterable[str]) -> dict | None:
    """`fields` of `instance` as an audit's before/after (None for no instance); a
    foreign key is given by its id (name the field `provider_id`)."""
    if instance is None:
        return None
    return {name: getattr(instance, name) for name in fields}


def audit_record(
    *,
    organization: Organization,
    actor: "Actor | AbstractBaseUser | ApiKey | str | None",
    action: str,
    target: models.Model,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEntry | None:
    """Add to the organization's audit trail that `actor` did `action`
    ("<thing>.<verb>", e.g. "provider.update") to `target`, which went from `before`
    to `after` (None: it did not exist / no longer does). Fields that look like
    secrets are dropped, whatever the caller passed. A change that changed nothing is
    not recorded (returns None). Call it inside the change's transaction, and before
    a delete (the target's id goes with the row)."""
    before, after = _without_secrets(before), _without_secrets(after)
    if before is not None and before == after:
        return None
    if isinstance(actor, str) or actor is None:
        actor = Actor(label=actor or "system")
    elif isinstance(actor, ApiKey):
        actor = Actor.of_api_key(actor)
    elif not hasattr(actor, "label"):  # a user
        actor = Actor.of_user(actor)
    return AuditEntry.objects.create(
        organization=organization,
        actor_user=getattr(actor, "user", None),
        actor_api_key=getattr(actor, "api_key", None),
        actor_label=actor.label[:150],
        action=action[:64],
        object_type=target._meta.label_lower,
        object_id="" if target.pk is None else str(target.pk),
        object_label=str(target)[:300],
        before=before,
        after=after,
    )


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
    actor: Actor | None = None,
) -> CreatedApiKey:
    """A new key, its raw form returned once. `expires_in` or `expires_at` (not both)
    makes it expire; the admin `scope` also lets it manage the organization (/api).
    Audited as `actor` (by default `created_by`).

    Raises ValidationError on an unknown scope or both expiries."""
    if scope not in ApiKey.Scope.values:
        raise ValidationError(f"Unknown API key scope {scope!r}")
    if expires_in is not None:
        if expires_at is not None:
            raise ValidationError("Give expires_in or expires_at, not both")
        expires_at = timezone.now() + expires_in
    raw = keys.generate_key()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            organization=organization,
            name=name,
            prefix=keys.lookup_prefix(raw),
            key_hash=keys.hash_key(raw),
            scope=scope,
            created_by=created_by,
            expires_at=expires_at,
        )
        audit_record(organization=organization, actor=actor or created_by,
                     action="api_key.create", target=api_key,
                     after=audit_values(api_key, API_KEY_AUDITED))
    return CreatedApiKey(api_key=api_key, raw_key=raw)


# What the audit shows of a key (the prefix is not secret: lists show it).
API_KEY_AUDITED = ("name", "prefix", "scope", "expires_at", "revoked_at")


def api_key_update(*, api_key: ApiKey, name: str, actor: Actor | None = None) -> ApiKey:
    """Rename a key (the only thing about a key that changes, but for revoking it)."""
    with transaction.atomic():
        before = audit_values(api_key, API_KEY_AUDITED)
        api_key.name = name
        api_key.save(update_fields=["name"])
        audit_record(organization=api_key.organization, actor=actor,
                     action="api_key.update", target=api_key, before=before,
                     after=audit_values(api_key, API_KEY_AUDITED))
    return api_key


def api_key_revoke(*, api_key: ApiKey, actor: Actor | None = None) -> ApiKey:
    """Revoke a key. The gateway notices within COGNITUDE_API_KEY_CACHE_SECONDS."""
    if api_key.revoked_at is None:
        with transaction.atomic():
            before = audit_values(api_key, API_KEY_AUDITED)
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
            audit_record(organization=api_key.organization, actor=actor,
                         action="api_key.revoke", target=api_key, before=before,
                         after=audit_values(api_key, API_KEY_AUDITED))
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
        _api_key_touch(api_key_id=api_key.pk, now=now)
    return AuthResult(api_key, None)


def _api_key_touch(*, api_key_id: int, now: datetime) -> int:
    """Set the key's last_used_at unless another process set it within the resolution:
    the condition is in the UPDATE, so of processes racing (each saw a stale value) one
    writes the row and the others match nothing (PostgreSQL re-checks the WHERE on the
    row the first committed). The callers reach this only when the value they loaded is
    stale: the gateway once per key per COGNITUDE_API_KEY_CACHE_SECONDS and process at
    most, the management API once per request. Returns the rows written (0 or 1)."""
    return (ApiKey.objects.filter(pk=api_key_id)
            .filter(Q(last_used_at__isnull=True)
                    | Q(last_used_at__lt=now - LAST_USED_RESOLUTION))
            .update(last_used_at=now))


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
    actor: Actor | None = None,
    audit_action: str = "provider.create",
) -> Provider:
    """Add an upstream to the organization, its key encrypted (audited as `actor`). It
    becomes the default (the one that receives models without a route) when `is_default`
    is set or the organization has no default yet.

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
        provider = Provider.objects.create(
            organization=organization, name=name, kind=kind, base_url=base_url,
            api_key_encrypted=crypto.encrypt(api_key), api_key_last4=api_key[-4:],
            api_version=api_version, enabled=enabled, is_default=is_default,
        )
        audit_record(organization=organization, actor=actor, action=audit_action,
                     target=provider, after=audit_values(provider, PROVIDER_AUDITED))
        return provider


# What the audit shows of a provider: its key only by its last four characters.
PROVIDER_AUDITED = ("name", "kind", "base_url", "api_version", "enabled", "is_default",
                    "api_key_last4")


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
    actor: Actor | None = None,
    audit_action: str = "provider.update",
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
        before = audit_values(provider, PROVIDER_AUDITED)
        for field, value in changes.items():
            setattr(provider, field, value)
        provider.save(update_fields=[*changes, "updated_at"])
        after = audit_values(provider, PROVIDER_AUDITED)
        if api_key:
            # A new key with the same last four would otherwise look like no change.
            after["key_replaced"] = True
        audit_record(organization=provider.organization, actor=actor, action=audit_action,
                     target=provider, before=before, after=after)
    return provider


def provider_delete(*, provider: Provider, actor: Actor | None = None) -> None:
    """Delete the provider. Raises ProviderInUse while a route targets it."""
    try:
        with transaction.atomic():
            audit_record(organization=provider.organization, actor=actor,
                         action="provider.delete", target=provider,
                         before=audit_values(provider, PROVIDER_AUDITED))
            provider.delete()
    except RestrictedError as exc:
        routes = sorted({target.route.name for target in exc.restricted_objects})
        raise ProviderInUse(
            f"Provider {provider.name!r} is a target of the route(s) "
            + ", ".join(repr(name) for name in routes)
            + ": remove it from them first") from None


def provider_credential_set(
    *, organization: Organization, kind: str, base_url: str, api_key: str | None,
    actor: Actor | None = None,
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
                            base_url=base_url, api_key=api_key, is_default=True,
                            actor=actor, audit_action="provider.credential_set")
    return provider_update(provider=current, kind=kind, base_url=base_url, api_key=api_key,
                           api_version=None if kind == Provider.Kind.AZURE else "",
                           actor=actor, audit_action="provider.credential_set")


def provider_credentials_rotate() -> int:
    """Re-encrypt every provider's key with the first configured key; returns the count."""
    count = 0
    with transaction.atomic():
        for provider in Provider.objects.select_for_update():
            provider.api_key_encrypted = crypto.rotate(provider.api_key_encrypted)
            provider.save(update_fields=["api_key_encrypted"])
            count += 1
    return count
