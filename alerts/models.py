"""Alert rules of an organization, the channels they notify, and the history of every
transition and delivery attempt.

A rule carries its own state (ok or firing, since when, the last value, the transition
sequence number): evaluation moves it with one conditional UPDATE, so of several
processes evaluating the same rule at once exactly one takes each transition, and only
that one creates the transition's AlertEvent rows. The unique constraints on AlertEvent
are the database's second word on it: one row per (rule, seq, transition, channel).
"""

from django.db import models
from django.db.models import Q

from organizations.models import ApiKey, Organization


class AlertChannel(models.Model):
    """Where an organization's alerts go: a Slack incoming webhook, an email address, a
    signed generic webhook (or Teams / PagerDuty). The target is a secret (a Slack
    webhook URL lets anyone post), so it is stored encrypted like provider keys."""

    class Kind(models.TextChoices):
        SLACK = "slack", "Slack"
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"
        TEAMS = "teams", "Microsoft Teams"
        PAGERDUTY = "pagerduty", "PagerDuty"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="alert_channels")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # MultiFernet token (organizations.crypto) of the URL or email address.
    target_encrypted = models.TextField()
    # What may be shown of the target: the email address's domain, a URL's host.
    target_hint = models.CharField(max_length=200, blank=True)
    # MultiFernet token of the webhook signing secret (blank for the other kinds).
    secret_encrypted = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"],
                                    name="alert_channel_name_unique_per_org"),
        ]

    def __str__(self) -> str:
        return f"{self.organization}: {self.name} ({self.kind} {self.target_hint})"


class AlertRule(models.Model):
    """When `metric` over the last `window_seconds` compares to `threshold` as
    `comparison` says, the rule fires; it notifies its channels once on firing, again
    every `cooldown_seconds` while it stays firing, and once when it resolves."""

    class Metric(models.TextChoices):
        SPEND_USD = "spend_usd", "Spend (USD)"
        BUDGET_USED_PCT = "budget_used_pct", "Budget used (%)"
        ERROR_RATE_PCT = "error_rate_pct", "Error rate (%)"
        P95_LATENCY_MS = "p95_latency_ms", "p95 latency (ms)"
        CACHE_HIT_RATE_PCT = "cache_hit_rate_pct", "Cache hit rate (%)"
        LIMIT_REJECTIONS = "limit_rejections", "Requests rejected by limits"
        PROVIDER_FAILING = "provider_failing", "Provider targets failing (breaker open)"
        NO_TRAFFIC_MINUTES = "no_traffic_minutes", "Minutes without traffic"

    class Comparison(models.TextChoices):
        GT = "gt", ">"
        GTE = "gte", "≥"
        LT = "lt", "<"
        LTE = "lte", "≤"

    class State(models.TextChoices):
        OK = "ok"
        FIRING = "firing"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="alert_rules")
    name = models.CharField(max_length=100)
    metric = models.CharField(max_length=30, choices=Metric.choices)
    comparison = models.CharField(max_length=3, choices=Comparison.choices,
                                  default=Comparison.GT)
    threshold = models.DecimalField(max_digits=20, decimal_places=6)
    window_seconds = models.PositiveIntegerField(default=300)
    # Filters (blank / null: everything). `provider` is a Provider's name.
    model = models.CharField(max_length=200, blank=True)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="alert_rules")
    provider = models.CharField(max_length=64, blank=True)
    channels = models.ManyToManyField(AlertChannel, blank=True, related_name="rules")
    cooldown_seconds = models.PositiveIntegerField(default=3600)
    enabled = models.BooleanField(default=True)
    # Created with the organization (alerts.defaults); editable like any other.
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # The state, written only by alerts.evaluation through conditional UPDATEs.
    state = models.CharField(max_length=10, choices=State.choices, default=State.OK)
    state_since = models.DateTimeField(null=True, blank=True)
    last_value = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every transition (firing, renotify, resolved): the compare-and-set token.
    seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"],
                                    name="alert_rule_name_unique_per_org"),
        ]
        indexes = [models.Index(fields=["enabled", "organization"])]

    def __str__(self) -> str:
        return f"{self.organization}: {self.name}"


class AlertEvent(models.Model):
    """One transition of a rule to one channel (or to none, when the rule has none):
    what crossed, the value and the threshold, and how its delivery went."""

    class Transition(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"
        RENOTIFY = "renotify"
        TEST = "test"

    class Status(models.TextChoices):
        PENDING = "pending"
        RETRYING = "retrying"
        DELIVERED = "delivered"
        FAILED = "failed"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="alert_events")
    # History outlives a deleted rule or channel: their names are kept on the row.
    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="events")
    rule_name = models.CharField(max_length=100, blank=True)
    metric = models.CharField(max_length=30, choices=AlertRule.Metric.choices, blank=True)
    comparison = models.CharField(max_length=3, choices=AlertRule.Comparison.choices,
                                  blank=True)
    transition = models.CharField(max_length=10, choices=Transition.choices)
    seq = models.PositiveIntegerField(default=0)
    value = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    threshold = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    channel = models.ForeignKey(AlertChannel, null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="events")
    channel_name = models.CharField(max_length=100, blank=True)
    # The channel's id when the row was made, 0 for none: the uniqueness key, which a
    # deleted channel (channel set NULL) does not change.
    channel_key = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The receiver's answer (or the error), truncated.
    response = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # Delivery (alerts.delivery): an attempt holds the row until `claimed_until`, so two
    # workers never send it at once and a crashed worker's claim runs out; a retry is
    # due at `next_attempt_at`.
    claimed_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "seq", "transition", "channel_key"],
                                    condition=Q(rule__isnull=False),
                                    name="one_alert_event_per_rule_transition_channel"),
        ]
        indexes = [models.Index(fields=["organization", "-created_at"]),
                   models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.rule_name} {self.transition} #{self.seq} -> {self.channel_name or '-'}"
