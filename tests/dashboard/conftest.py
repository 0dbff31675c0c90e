import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(request, settings):
    """The default hasher costs ~0.3 s a user and every `world` makes three. Not for
    `live_world`: the gateway process checks the browser's login with its own settings."""
    if "live_world" not in request.fixturenames:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_dashboard_cache():
    """The dashboard keeps its reads in Django's cache for a minute; each test starts
    with none, so it sees the records it just wrote."""
    from django.core.cache import cache

    cache.clear()
