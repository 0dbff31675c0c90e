"""The fast subset of the fault suite (bench/chaos.py; `make chaos` runs all of it):
steady mixed load on two gateways and two Celery workers, with their own Redis hot tier
and Redis broker, while the hot tier is SIGKILLed and restarted, then one gateway is
SIGTERMed and restarted. No request fails, and every 2xx answer is recorded exactly
once, every miss's answer in the cold tier once."""

import pytest

from bench.chaos import exercise, faults, start_stack, table
from fakeupstream.testing import start_fake_upstream
from organizations.services import provider_credential_set
from tests import live

RATE = 25


@pytest.mark.xdist_group("chaos")
def test_it_loses_and_doubles_nothing_through_a_redis_kill_and_a_gateway_restart(live_world):
    upstream = start_fake_upstream()
    tenant = live_world.a
    provider_credential_set(organization=tenant.org, kind="openai",
                            base_url=upstream[1] + "/v1", api_key=tenant.provider_key)
    stack = start_stack(database_url=live.test_database_url(), org_id=tenant.org.id,
                        api_key=tenant.raw_key, upstream=upstream)
    try:
        every = faults(redis_down=2)
        outcome = exercise(stack, [every["redis-kill"], every["web-term"]], rate=RATE,
                           quiet=1.5, settle=2, books_timeout=20, log=lambda _: None)
    finally:
        stack.close()
    report = table(outcome.rows)
    assert [row.name for row in outcome.rows] == ["redis-kill", "web-term"]
    for row in outcome.rows:
        assert row.sent > RATE * 2, report
        assert row.failed == 0, report
        assert row.recorded == row.sent, report
        assert (row.missing, row.doubled, row.cold_missing, row.cold_doubled) == (0, 0, 0, 0), (
            report)
    assert outcome.unaccounted == 0 and outcome.spooled_bytes == 0, report
