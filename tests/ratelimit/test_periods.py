"""Budget periods in an organization's time zone, OpenAI's reset format, and what a
request reserves."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ratelimit.gate import tokens_estimate
from ratelimit.periods import budget_period, openai_duration


@pytest.mark.parametrize(("ms", "written"), [
    (0, "0ms"), (17, "17ms"), (999, "999ms"), (1000, "1s"), (1500, "1.5s"),
    (59_560, "59.56s"), (60_000, "1m0s"), (360_000, "6m0s"), (3_723_500, "1h2m3.5s"),
])
def test_it_writes_resets_the_way_openai_does(ms, written):
    assert openai_duration(ms) == written


def test_it_starts_a_day_at_the_organizations_midnight():
    tokyo = ZoneInfo("Asia/Tokyo")
    # 20:00 UTC on the 1st is already the 2nd in Tokyo.
    period = budget_period("day", tokyo, datetime(2030, 3, 1, 20, tzinfo=UTC))
    assert (period.start, period.end) == (datetime(2030, 3, 2, tzinfo=tokyo),
                                          datetime(2030, 3, 3, tzinfo=tokyo))
    assert period.label == "2030-03-02"


def test_it_keeps_a_day_whole_across_a_clock_change():
    paris = ZoneInfo("Europe/Paris")
    period = budget_period("day", paris, datetime(2030, 3, 31, 12, tzinfo=UTC))
    # Clocks go forward on 31 March 2030: that day is 23 hours long.
    assert period.end.astimezone(UTC) - period.start.astimezone(UTC) == timedelta(hours=23)
    assert period.end == datetime(2030, 4, 1, tzinfo=paris)


def test_it_takes_the_calendar_month_in_the_time_zone():
    new_york = ZoneInfo("America/New_York")
    period = budget_period("month", new_york, datetime(2031, 1, 1, 3, tzinfo=UTC))
    assert (period.start, period.end) == (datetime(2030, 12, 1, tzinfo=new_york),
                                          datetime(2031, 1, 1, tzinfo=new_york))
    assert period.label == "2030-12"


def test_it_reserves_the_body_and_the_answer_it_may_get():
    body = {"model": "m", "messages": [], "max_tokens": 100}
    assert tokens_estimate(endpoint="chat/completions", body=body, body_size=401) == (101, 100)
    assert tokens_estimate(endpoint="chat/completions",
                           body={**body, "max_completion_tokens": 7, "n": 3},
                           body_size=8) == (2, 21)
    assert tokens_estimate(endpoint="responses", body={"max_output_tokens": 9},
                           body_size=4) == (1, 9)
    assert tokens_estimate(endpoint="embeddings", body={"max_tokens": 9}, body_size=40) == (10, 0)


def test_it_reserves_the_default_answer_when_none_is_named(settings):
    from ratelimit import gate

    for named in ({}, {"max_tokens": None}, {"max_tokens": "lots"}, {"max_tokens": True}):
        assert tokens_estimate(endpoint="completions", body=named,
                               body_size=0) == (0, gate._DEFAULT_COMPLETION)
    assert gate._DEFAULT_COMPLETION == settings.COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS
