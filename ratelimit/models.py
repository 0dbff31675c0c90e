"""Limits and budgets of an organization, its policy when the limits store is down, the
audit of every change, and the record of each budget a period's spend crossed.

The request path never reads these tables per request: it keeps a snapshot of an
organization's rows for COGNITUDE_LIMITS_CACHE_SECONDS (ratelimit.snapshot).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from organizations.models import ApiKey, Organization


class Limit(models.Model):
    """Rates for the organization (no key), for one of its keys, and either of them
    narrowed to one model (blank: every model). A request is held to every row that
    matches it: the organization's, the organization's for its model, its key's, and
    its key's for its model. Blank numbers are no limit."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="limits")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="limits")
    model = models.CharField(max_length=200, blank=True,
                             help_text="The model asked for; blank for every model.")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    concurrent_requests = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "model"],
                                    condition=Q(api_key__isnull=True),
                                    name="one_org_limit_per_model"),
            models.UniqueConstraint(fields=["organization", "api_key", "model"],
                                    condition=Q(api_key__isnull=False),
                                    name="one_key_limit_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.organization}: limits for {scope_label(self.api_key, self.model)}"


class Budget(models.Model):
    """A spend cap in USD for a calendar day or month in the organization's time zone,
    for the whole organization (no key) or one of its keys. Hard: requests are refused
    once the period's spend reaches it. Soft: they go on, and the crossing is recorded."""

    class Period(models.TextChoices):
        DAY = "day"
        MONTH = "month"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="budgets")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="budgets")
    period = models.CharField(max_length=5, choices=Period.choices)
    limit_usd = models.DecimalField("limit (USD)", max_digits=14, decimal_places=4)
    soft = models.BooleanField(default=False, help_text="Allow and record, never refuse.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "period"],
                                    condition=Q(api_key__isnull=True),
                                    name="one_org_budget_per_period"),
            models.UniqueConstraint(fields=["organization", "api_key", "period"],
                                    condition=Q(api_key__isnull=False),
                                    name="one_key_budget_per_period"),
        ]

    def __str__(self) -> str:
        kind = "soft" if self.soft else "hard"
        return (f"{self.organization}: {kind} {self.period} budget of ${self.limit_usd} "
                f"for {scope_label(self.api_key, '')}")


class LimitPolicy(models.Model):
    """What an organization's requests get while the limits Redis is unreachable:
    fail open (the default: served, held to a per-process approximation of the limits)
    or fail closed (503)."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE,
                                        related_name="limit_policy")
    fail_closed = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "limit policies"

    def __str__(self) -> str:
        return f"{self.organization}: fail {'closed' if self.fail_closed else 'open'}"


class LimitChange(models.Model):
    """The audit: one row per change to a limit, budget or policy, with who made it and
    the values before and after (None: it did not exist / it was deleted)."""

    class Target(models.TextChoices):
        LIMIT = "limit"
        BUDGET = "budget"
        POLICY = "policy"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="limit_changes")
    target = models.CharField(max_length=10, choices=Target.choices)
    # What was changed, in words: "key cog_ab12cd34 / model gpt-4o", "organization".
    subject = models.CharField(max_length=300)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    # How it was changed when no user did it (a command, an API key), or the user's name.
    actor_label = models.CharField(max_length=150)
    old = models.JSONField(null=True, blank=True)
    new = models.JSONField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["organization", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label}: {self.target} {self.subject}"


class BudgetCrossing(models.Model):
    """A budget's period spend reached its limit: once per budget and period (the
    alerts issue notifies from these)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="budget_crossings")
    budget = models.ForeignKey(Budget, null=True, on_delete=models.SET_NULL,
                               related_name="crossings")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    period = models.CharField(max_length=5, choices=Budget.Period.choices)
    period_start = models.DateField(help_text="In the organization's time zone.")
    limit_usd = models.DecimalField(max_digits=14, decimal_places=4)
    spend_usd = models.DecimalField(max_digits=20, decimal_places=8)
    soft = models.BooleanField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start"],
                                    name="one_crossing_per_budget_period"),
        ]

    def __str__(self) -> str:
        return f"{self.organization}: {self.period} budget ${self.limit_usd} crossed {self.at}"


def scope_label(api_key: ApiKey | None, model: str) -> str:
    """What a limit or budget applies to, in words."""
    who = f"key {api_key.prefix}" if api_key is not None else "organization"
    return f"{who} / model {model}" if model else who
