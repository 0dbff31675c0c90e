"""caching.CacheLookups starts from the request records already stored: /cache/stats
counted hits and misses from them until now, and goes on from the same numbers."""

from django.db import migrations

# The outcomes as they are spelled today: a migration keeps its own copy.
_FILL = """
INSERT INTO caching_cachelookups (organization_id, hits, misses)
SELECT organization_id,
       count(*) FILTER (WHERE cache_outcome IN
                        ('hit_redis', 'hit_memory', 'hit_postgres', 'hit_coalesced')),
       count(*) FILTER (WHERE cache_outcome = 'miss')
FROM analytics_requestlog
GROUP BY organization_id
"""


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0005_hourly_rollup"),
        ("caching", "0002_cache_lookups"),
    ]

    operations = [migrations.RunSQL(_FILL, migrations.RunSQL.noop)]
