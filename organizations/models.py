from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


def validate_time_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        raise ValidationError(f"{name!r} is not an IANA time zone (e.g. Europe/Paris)") from None


class Organization(models.Model):
    """A tenant: everything a request touches hangs off one of these."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    # None means the site default (COGNITUDE_CACHE_TTL).
    cache_ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Budgets' days and months are calendar periods here (IANA name).
    time_zone = models.CharField(max_length=64, default="UTC",
                                 validators=[validate_time_zone])
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class ApiKey(models.Model):
    """An organization's API key. Only a SHA-256 of the raw key is stored."""

    class Scope(models.TextChoices):
        # /v1 and reading analytics: what an application needs.
        PROXY = "proxy", "Proxy (gateway and analytics)"
        # Also manages the organization (providers, routes, keys) through /api.
        ADMIN = "admin", "Admin (also manages providers, routes and keys)"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    # Non-secret, shown in lists and used to find the row; the rest of the key is secret.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.PROXY)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"


class Provider(models.Model):
    """One upstream of an organization: where requests go and with which key. The
    default provider receives every model that has no route of its own."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI or OpenAI-compatible"
        AZURE = "azure", "Azure OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="providers"
    )
    # Routes and commands name a provider by this (`--target NAME:MODEL`).
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(max_length=500)
    # MultiFernet token of the provider's API key (COGNITUDE_ENCRYPTION_KEYS).
    api_key_encrypted = models.TextField()
    api_key_last4 = models.CharField(max_length=4, blank=True)
    # Azure OpenAI's api-version query parameter; blank for the other kinds.
    api_version = models.CharField(max_length=40, blank=True)
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"],
                                    name="provider_name_unique_per_org"),
            models.UniqueConstraint(fields=["organization"], condition=models.Q(is_default=True),
                                    name="one_default_provider_per_org"),
        ]

    def __str__(self) -> str:
        return f"{self.organization}: {self.name} ({self.kind} at {self.base_url})"


class AuditEntry(models.Model):
    """One change an organization's people or keys made to its keys, providers, routes,
    rules...: who, what, and the values before and after (never a secret: the service
    drops secret fields). Limits and budgets keep their own detailed trail
    (ratelimit.LimitChange), which the dashboard's audit page links to."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="audit_entries")
    # One of these, or neither (a command, a system task): actor_label always says who.
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    actor_api_key = models.ForeignKey(ApiKey, null=True, blank=True,
                                      on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=150)
    # "<object type>.<verb>": "api_key.create", "provider.credential_set", "route.delete".
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)  # the model's label, "organizations.provider"
    object_id = models.CharField(max_length=64, blank=True)
    # The object's name when it happened: it survives the object's deletion.
    object_label = models.CharField(max_length=300, blank=True)
    # Dates and decimals stored as ISO strings.
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["organization", "-created_at"],
                                name="audit_org_time")]

    def __str__(self) -> str:
        return (f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label}: {self.action} "
                f"{self.object_label}")
