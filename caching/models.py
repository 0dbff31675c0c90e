from django.db import models

from organizations.models import Organization


class CacheEntry(models.Model):
    """The cold tier: every cached response, kept for analytics and as the fallback
    when Redis is away. `payload` holds the exact bytes the hot tier holds, so a
    cold hit is promoted to Redis without re-serialising."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="cache_entries"
    )
    key_hash = models.CharField(max_length=64)
    endpoint = models.CharField(max_length=40)
    model = models.CharField(max_length=200)
    request = models.JSONField()
    payload = models.BinaryField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    hits = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField()
    last_hit_at = models.DateTimeField(null=True, blank=True)
    # Only set when the request asked for a max-age; otherwise the cold tier keeps
    # serving after the hot tier's TTL has let the entry go.
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "cache entries"
        constraints = [
            models.UniqueConstraint(fields=["organization", "key_hash"], name="one_entry_per_key")
        ]
        indexes = [models.Index(fields=["organization", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.key_hash[:12]} ({self.model})"


class CacheLookups(models.Model):
    """An organization's cache lookups over all time, for /cache/stats: hits (every
    tier) and misses. Requests that bypassed the cache are no lookups and count in
    neither. Kept by caching.cold.cache_lookups_add as the request records are stored,
    so the numbers follow the records and survive Redis evicting or restarting and the
    cache being cleared."""

    organization = models.OneToOneField(Organization, primary_key=True,
                                        on_delete=models.CASCADE, related_name="cache_lookups")
    hits = models.PositiveBigIntegerField(default=0)
    misses = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "cache lookups"

    def __str__(self) -> str:
        return f"{self.organization_id}: {self.hits} hits, {self.misses} misses"
