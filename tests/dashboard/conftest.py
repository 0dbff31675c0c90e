import pytest


@pytest.fixture(autouse=True)
def fresh_dashboard_cache():
    """The dashboard keeps its reads in Django's cache for a minute; each test starts
    with none, so it sees the records it just wrote."""
    from django.core.cache import cache

    cache.clear()
