"""Shared test world: alice (owner of org A), bob (member of org A), charlie (owner of
org B); real PostgreSQL and Redis, the fake upstream and the gateway over sockets."""

import functools
import json
import logging
import os
import secrets
import time
import urllib.request
from dataclasses import dataclass
from importlib import import_module

import pytest
import redis as redis_lib
from django.apps import apps as django_apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractBaseUser

from cognitude.db import db_threads_stop
from fakeupstream.testing import start_fake_upstream, stop_fake_upstream
from organizations.models import Organization
from organizations.services import (
    api_key_create,
    membership_set,
    organization_create,
    provider_credential_set,
)
from tests.live import Gateway, start_gateway
from tests.logs import leaked_lines, log_dir, log_file


def _redis_url_for_this_worker(url: str) -> str:
    """Under pytest-xdist (`-n N`) each worker flushes a Redis database of its own: gw0
    the one in TEST_REDIS_URL, gw1 the one below it, and so on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) - int(worker.removeprefix('gw'))}"


TEST_REDIS_URL = _redis_url_for_this_worker(
    os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))

# These stop RabbitMQ (broker_stop) or need it up throughout: under `-n N --dist
# loadgroup` they all run on one worker, one after another.
_NEEDS_THE_BROKER_ALONE = ("tests/pipeline/", "tests/test_health.py",
                           "tests/analytics/test_tasks.py")


def pytest_configure(config) -> None:
    # The controller makes the run's log directory before xdist starts the workers (they
    # inherit it); each pytest process also writes its own logging there.
    log_dir()
    handler = logging.FileHandler(log_file("pytest"))
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fail the run if any log it produced (the gateways', the workers', the test
    processes' own) holds a raw API key or a provider key."""
    if hasattr(session.config, "workerinput"):
        return  # the controller checks, once every worker has finished
    leaks = leaked_lines()
    if leaks:
        print(f"\nSecrets in the logs of this run ({log_dir()}):\n" + "\n".join(leaks[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# First: xdist's own hook reads the groups into the node ids, and runs before a plain
# conftest hook; after it, these markers grouped nothing.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.nodeid.startswith(_NEEDS_THE_BROKER_ALONE):
            item.add_marker(pytest.mark.xdist_group("broker"))


@pytest.fixture(scope="session", autouse=True)
def db_threads_closed(django_db_setup):
    """The ORM threads of cognitude.db keep connections to the test database open;
    end them before pytest-django drops it."""
    yield
    db_threads_stop()


@pytest.fixture(autouse=True)
def fast_password_hashing(request, settings):
    """The default hasher costs ~0.3 s a user and every world makes three. Not with
    `live_world`: the gateway process checks logins with the default hashers."""
    if "live_world" not in request.fixturenames:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_login_throttle():
    """Each test starts with no failed sign-ins counted in this process (the in-memory
    throttle, used when no limits Redis is configured), so tests cannot lock each other
    out."""
    from cognitude import logins

    logins._store = None


@dataclass
class FakeUpstream:
    url: str

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return json.load(response)

    def calls_with(self, provider_key: str) -> int:
        return self.stats()["by_token"].get(provider_key, 0)


@pytest.fixture(scope="session")
def fake_upstream():
    process, url = start_fake_upstream()
    yield FakeUpstream(url)
    stop_fake_upstream(process)


@pytest.fixture(scope="session")
def redis_client():
    client = redis_lib.Redis.from_url(TEST_REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def clean_redis(redis_client):
    redis_client.flushdb()
    return redis_client


@pytest.fixture(scope="session")
def gateway(django_db_setup, django_db_blocker) -> Gateway:
    """The gateway as operators run it, on the test database and test Redis."""
    with django_db_blocker.unblock():
        started = start_gateway({"REDIS_URL": TEST_REDIS_URL})
    yield started
    started.stop()


@dataclass
class Tenant:
    org: Organization
    owner: AbstractBaseUser
    raw_key: str
    provider_key: str


@dataclass
class World:
    alice: AbstractBaseUser
    bob: AbstractBaseUser
    charlie: AbstractBaseUser
    a: Tenant
    b: Tenant


@functools.cache
def _password_hash(password: str, hashers: tuple[str, ...]) -> str:
    """make_password once per password and hasher list: the default hasher (what
    `live_world` keeps, for the gateway's logins) costs ~0.25 s, three per world."""
    return make_password(password)


def make_user(username: str) -> AbstractBaseUser:
    # As create_user makes it, with the password's hash computed once per process: a
    # real hash of the default (or the test's) hasher, which logins check as usual.
    return get_user_model().objects.create(
        username=username, email=f"{username}@example.com",
        password=_password_hash("pw-" + username, tuple(django_settings.PASSWORD_HASHERS)),
    )


def make_tenant(name: str, owner: AbstractBaseUser, upstream_base: str) -> Tenant:
    org = organization_create(name=name)
    membership_set(organization=org, user=owner, role="owner")
    raw_key = api_key_create(organization=org, name="default", created_by=owner).raw_key
    provider_key = f"sk-{org.slug}-{secrets.token_hex(6)}"
    provider_credential_set(organization=org, kind="openai", base_url=upstream_base,
                            api_key=provider_key)
    return Tenant(org, owner, raw_key, provider_key)


def make_world(upstream_base: str) -> World:
    alice, bob, charlie = make_user("alice"), make_user("bob"), make_user("charlie")
    a = make_tenant("Org A", alice, upstream_base)
    membership_set(organization=a.org, user=bob, role="member")
    b = make_tenant("Org B", charlie, upstream_base)
    return World(alice, bob, charlie, a, b)


@pytest.fixture
def world(db, settings, fake_upstream) -> World:
    """The world in a rolled-back transaction: for tests that stay in this process."""
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    return make_world(fake_upstream.api_base)


def wait_for_quiet_writes(*, poll: float = 0.06, timeout: float = 3.0) -> None:
    """Wait until the gateways' background writes (request records, cold-tier entries)
    have stopped for two polls in a row.

    pytest-django empties the tables after each live test; a write landing during that
    TRUNCATE can deadlock it and leave the next test a dirty database."""
    from analytics.models import RequestLog
    from caching.models import CacheEntry

    def counts() -> tuple[int, int, int]:
        hits = sum(CacheEntry.objects.values_list("hits", flat=True))
        return RequestLog.objects.count(), CacheEntry.objects.count(), hits

    deadline = time.monotonic() + timeout
    last, stable = counts(), 0
    while stable < 2 and time.monotonic() < deadline:
        time.sleep(poll)
        now = counts()
        stable = stable + 1 if now == last else 0
        last = now


@pytest.fixture
def live_world(transactional_db, settings, fake_upstream, clean_redis) -> World:
    """The world committed, so the gateway process sees it; Redis emptied. The list
    prices are there as on a fresh install: pytest-django empties every table after a
    transactional test, the one the price data migration fills included."""
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    import_module("analytics.migrations.0003_model_prices_data").add_prices(django_apps, None)
    import_module("analytics.migrations.0009_model_capabilities_data").add_capabilities(
        django_apps, None)
    yield make_world(fake_upstream.api_base)
    wait_for_quiet_writes()
