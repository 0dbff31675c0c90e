"""Gateways for the limits tests: the limits Redis is the test Redis unless a test
starts one of its own; limits and prices reach a gateway within 0.2 s of a change."""

import time

import pytest

from analytics.models import RequestLog
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway

# The machine is shared and busy: these tests are about what Redis answers, so a slow
# answer is waited for rather than taken for a dead Redis (the fault tests use the default),
# the hot tier's too (its breaker open, a repeated request is a miss until the cold tier
# has it: CI once saw a budget spent by a second miss where a hit was meant).
LIMITS_ENV = {"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_LIMITS_CACHE_SECONDS": "0.2",
              "COGNITUDE_LIMITS_REDIS_TIMEOUT": "3", "COGNITUDE_REDIS_TIMEOUT": "3"}


@pytest.fixture(scope="module")
def limits_gateway(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        started = start_gateway(LIMITS_ENV)
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def records_landed(request):
    """After a test that used the module's gateway: its last records written (the
    gateway writes them in batches after the answers) before the test's database is
    flushed. A flush that ran while they were inserted deadlocked once on CI."""
    yield
    if "limits_gateway" not in request.fixturenames:
        return
    count, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 5
    while time.monotonic() < deadline:
        now = RequestLog.objects.count()
        if now != count:
            count, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 0.3:
            return
        time.sleep(0.05)
