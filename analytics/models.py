from django.db import models

from organizations.models import ApiKey, Organization


class RequestLog(models.Model):
    """One row per proxied request, written in batches by the event pipeline."""

    class CacheOutcome(models.TextChoices):
        HIT_REDIS = "hit_redis", "hit (Redis)"
        HIT_MEMORY = "hit_memory", "hit (in-process)"
        HIT_POSTGRES = "hit_postgres", "hit (PostgreSQL)"
        HIT_COALESCED = "hit_coalesced", "hit (coalesced)"
        MISS = "miss"
        BYPASS = "bypass"
        NONE = "none", "not looked up"

    request_id = models.CharField(max_length=32, unique=True)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="request_logs"
    )
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL)
    endpoint = models.CharField(max_length=40)
    model_requested = models.CharField(max_length=200, blank=True)
    model_used = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=40, blank=True)
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
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["organization", "created_at"]),
            models.Index(fields=["organization", "model_requested", "created_at"]),
            models.Index(fields=["organization", "api_key", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.endpoint} {self.status}"
