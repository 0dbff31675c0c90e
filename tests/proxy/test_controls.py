"""Per-request cache controls: what a `Cache-Control` and a namespace header ask for,
or the message the client gets back in a 400. The gateway tests show the effect of
each control on a real request; these pin the parsing."""

import pytest

from proxy.controls import NO_CONTROLS, CacheControls, parse_cache_controls


def test_it_asks_for_nothing_without_headers():
    assert parse_cache_controls("", "") == NO_CONTROLS == CacheControls(
        no_cache=False, no_store=False, max_age=None, namespace="")


@pytest.mark.parametrize("header, expected", [
    ("no-cache", CacheControls(no_cache=True)),
    ("no-store", CacheControls(no_store=True)),
    ("max-age=60", CacheControls(max_age=60)),
    ("s-maxage=30", CacheControls(max_age=30)),
    ("no-cache, no-store", CacheControls(no_cache=True, no_store=True)),
    ("no-store,max-age=120", CacheControls(no_store=True, max_age=120)),
    ("No-Cache, MAX-AGE=5", CacheControls(no_cache=True, max_age=5)),
    ("  no-store  ,  max-age=7 ", CacheControls(no_store=True, max_age=7)),
    # Directives that mean nothing to a response cache for one request are ignored.
    ("private, must-revalidate", NO_CONTROLS),
    ("no-transform, no-cache", CacheControls(no_cache=True)),
    (",,no-cache,,", CacheControls(no_cache=True)),
    # RFC 9111 5.2: a quoted max-age is accepted.
    ('max-age="60"', CacheControls(max_age=60)),
], ids=lambda value: value if isinstance(value, str) else "")
def test_it_reads_the_directives(header, expected):
    assert parse_cache_controls(header, "") == expected


def test_it_caps_a_huge_max_age_at_two_to_the_thirty_first():
    # RFC 9111 1.2.2; a bigger EX would make Redis refuse the store.
    assert parse_cache_controls("max-age=99999999999999999999999", "").max_age == 2**31
    assert parse_cache_controls(f"max-age={2**31 - 1}", "").max_age == 2**31 - 1


@pytest.mark.parametrize("header", [
    "max-age=soon", "max-age=0", "max-age=-5", "max-age=", "max-age", "max-age=1.5",
    "max-age=1e3", "no-store, max-age=x", "s-maxage=0", 'max-age="', 'max-age=""',
    'max-age="0"',
    "max-age=\u00b2",  # a digit to str.isdigit(), not to int()
    "max-age=\uff11\uff12",  # fullwidth digits, which int() would take
])
def test_it_refuses_a_max_age_that_is_not_a_positive_whole_number(header):
    message = parse_cache_controls(header, "")

    assert message == "Cache-Control max-age must be a positive whole number of seconds"


def test_it_keeps_a_namespace_with_or_without_cache_control():
    assert parse_cache_controls("", "tenant-42") == CacheControls(namespace="tenant-42")
    assert parse_cache_controls("no-store", "user 7/a") == CacheControls(
        no_store=True, namespace="user 7/a")


def test_it_keeps_the_namespace_as_given():
    # Case and spaces separate namespaces: "A" and "a" are two caches.
    assert parse_cache_controls("", "Team A").namespace == "Team A"
    assert parse_cache_controls("", "team a").namespace == "team a"


@pytest.mark.parametrize("namespace", ["x" * 65, "tab\there", "line\nbreak", "nul\x00"],
                         ids=["65-chars", "tab", "newline", "nul"])
def test_it_refuses_a_long_or_unprintable_namespace(namespace):
    message = parse_cache_controls("", namespace)

    assert message == "X-Cognitude-Cache-Namespace must be at most 64 printable characters"


def test_it_accepts_a_namespace_of_sixty_four_characters():
    assert parse_cache_controls("", "x" * 64).namespace == "x" * 64
