from django.db import models

from caching.outcomes import CacheOutcome
from organizations.models import ApiKey, Organization

# HourlyLatency's buckets: LATENCY_BUCKETS_PER_OCTAVE per doubling from LATENCY_FLOOR_MS.
LATENCY_FLOOR_MS = 0.01
LATENCY_BUCKETS_PER_OCTAVE = 8


class ModelPrice(models.Model):
    """A list price, per million tokens, in force from `effective_from` on.

    `model` is an exact model name (`gpt-4o-2024-05-13`) or a glob pattern
    (`gpt-4o-mini*`, `*llama-3.1-70b*`) so dated snapshots and provider-prefixed names
    share one row. Matching ignores case. `analytics.prices` picks the row: an exact
    name beats a pattern, a longer pattern beats a shorter one, and among one name's
    rows the newest `effective_from` not after the request wins.
    """

    model = models.CharField(
        max_length=200,
        help_text="Exact model name, or a glob pattern with * (e.g. gpt-4o-mini*).",
    )
    provider = models.CharField(max_length=40, blank=True, help_text="For reading only.")
    input_per_million = models.DecimalField(
        "input USD per 1M tokens", max_digits=12, decimal_places=6
    )
    output_per_million = models.DecimalField(
        "output USD per 1M tokens", max_digits=12, decimal_places=6
    )
    effective_from = models.DateField()
    # What the model can do, for smart routing's guards (routing.policy): a request is
    # never sent down to a model that cannot take its context, tools, strict JSON
    # schema or images. Null / False: not known, so not relied on.
    context_window = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens in and out the model takes, if known.")
    supports_tools = models.BooleanField(default=False)
    supports_json_schema = models.BooleanField(
        default=False, help_text="Structured outputs: a strict JSON-schema response_format.")
    supports_images = models.BooleanField(default=False, help_text="Image inputs.")

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="one_price_per_model_and_date"
            )
        ]

    def __str__(self) -> str:
        return (f"{self.model}: {self.input_per_million} / {self.output_per_million} "
                f"from {self.effective_from}")


class RequestLog(models.Model):
    """One row per proxied request, written in batches by the event pipeline."""

    request_id = models.CharField(max_length=32, unique=True)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="request_logs"
    )
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL)
    endpoint = models.CharField(max_length=40)
    model_requested = models.CharField(max_length=200, blank=True)
    model_used = models.CharField(max_length=200, blank=True)
    # The name of the provider that answered (organizations.Provider.name), if any did.
    provider = models.CharField(max_length=64, blank=True)
    # Upstream calls the route made, and why those before the answer failed
    # ("provider:model=reason; ...", as X-Cognitude-Fallback says).
    attempts = models.PositiveSmallIntegerField(default=0)
    fallback = models.TextField(blank=True)
    cache_outcome = models.CharField(max_length=16, choices=CacheOutcome.choices)
    status = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=60, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # None when the model has no price: unpriced is not free.
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    saved_cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    latency_ms = models.FloatField()
    upstream_latency_ms = models.FloatField(null=True, blank=True)
    streamed = models.BooleanField(default=False)
    # Cache-Control: no-cache / no-store on the request; with cache_key this shows
    # repeated requests that never let the cache help.
    cache_bypassed = models.BooleanField(default=False)
    cache_key = models.CharField(max_length=64, blank=True)
    # Smart routing (routing.policy), when the organization's policy decided: its mode
    # then ("on" applied it, "shadow" only recorded it), the tier and the classifier's
    # score (what calibration reads), and the tier's model. `asked_cost` is what the
    # model asked for would have cost with these tokens (for `auto`: the complex tier's
    # model); `routing_saved_cost` is asked_cost minus what was paid (the cost, or on a
    # hit the cache's saving, so cache and routing savings add up), in shadow mode what
    # the tier's model would have saved. Null: unpriced.
    route_mode = models.CharField(max_length=8, blank=True)
    route_tier = models.CharField(max_length=10, blank=True)
    route_score = models.FloatField(null=True, blank=True)
    route_model = models.CharField(max_length=200, blank=True)
    asked_cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    routing_saved_cost = models.DecimalField(max_digits=14, decimal_places=8, null=True,
                                             blank=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["organization", "created_at"]),
            models.Index(fields=["organization", "model_requested", "created_at"]),
            models.Index(fields=["organization", "api_key", "created_at"]),
            # /cache/stats counts hits and misses over all time: an index-only count.
            models.Index(fields=["organization", "cache_outcome"],
                         name="requestlog_org_outcome_idx"),
            # Calibration reads an organization's last scored records.
            models.Index(fields=["organization", "-created_at"],
                         condition=models.Q(route_score__isnull=False),
                         name="requestlog_org_scored_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.endpoint} {self.status}"


class HourlyUsage(models.Model):
    """An organization's request records of one UTC hour, summed.

    usage_summary and usage_timeseries read whole hours from here instead of the
    records (a month is 720 rows, not a million). PostgreSQL triggers on
    analytics_requestlog keep it (migration 0005): every INSERT adds the rows it
    actually inserted (a redelivered batch whose rows conflict adds nothing), every
    DELETE (retention, a deleted organization) takes its rows away, each in the same
    transaction as the records. Nothing else writes it. A new cache outcome needs a
    column here and in the triggers.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="+")
    hour = models.DateTimeField()
    requests = models.IntegerField(default=0)
    hits_redis = models.IntegerField(default=0)
    hits_postgres = models.IntegerField(default=0)
    hits_memory = models.IntegerField(default=0)
    hits_coalesced = models.IntegerField(default=0)
    misses = models.IntegerField(default=0)
    bypasses = models.IntegerField(default=0)
    errors = models.IntegerField(default=0)
    unpriced_requests = models.IntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    # Sums of the priced requests only, as RequestLog.cost and saved_cost sum.
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    saved_cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "hour"],
                                    name="one_usage_row_per_org_and_hour")
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.hour:%Y-%m-%d %H}:00 {self.requests}"


class HourlyLatency(models.Model):
    """How many of an organization's requests of one UTC hour fell in each latency
    bucket: the histogram usage_summary estimates percentiles from over long ranges.

    With n = LATENCY_BUCKETS_PER_OCTAVE, bucket b holds latencies in
    [LATENCY_FLOOR_MS * 2**(b/n), LATENCY_FLOOR_MS * 2**((b+1)/n)) ms (bucket 0 also
    everything below), so a bucket is 9% wide. Kept by the same triggers as HourlyUsage.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="+")
    hour = models.DateTimeField()
    bucket = models.PositiveSmallIntegerField()
    requests = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "hour", "bucket"],
                                    name="one_latency_row_per_org_hour_bucket")
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.hour:%Y-%m-%d %H}:00 #{self.bucket} {self.requests}"


class Feedback(models.Model):
    """What a caller thought of one answer (POST /v1/feedback): a score in [0, 1]
    (thumbs up is 1, down 0) and an optional note. One per request and organization;
    sent again, it replaces the first. Kept by request id, not a foreign key: feedback
    may arrive before the request's record has landed (records are written in batches)."""

    class Rating(models.TextChoices):
        UP = "up", "Up"
        DOWN = "down", "Down"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="feedback")
    request_id = models.CharField(max_length=32)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    score = models.FloatField()
    rating = models.CharField(max_length=4, choices=Rating.choices, blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "request_id"],
                                    name="one_feedback_per_request"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.score}"
