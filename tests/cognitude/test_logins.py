"""Sign-in throttling (cognitude/logins.py): the dashboard's and admin's logins refuse an
account, or an address, after its failures, before any password is hashed, with a
message saying so; the lockout ends by itself; the count lives in Redis, so two
processes share it."""

import os
import subprocess
import sys
import time

import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import Client

from cognitude.logins import KEY_PREFIX
from fakeupstream.testing import free_port
from tests.conftest import TEST_REDIS_URL
from tests.live import PROJECT_DIR

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


class CountingHasher(MD5PasswordHasher):
    """Django's MD5 hasher, counting how often a password is hashed."""

    algorithm = "counting_md5"
    calls = 0

    def encode(self, password, salt):
        CountingHasher.calls += 1
        return super().encode(password, salt)


@pytest.fixture
def throttle(settings):
    settings.COGNITUDE_LIMITS_REDIS_URL = TEST_REDIS_URL
    settings.COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.COGNITUDE_LOGIN_FAILURES_PER_ADDRESS = 6
    settings.COGNITUDE_LOGIN_LOCKOUT_SECONDS = 60
    settings.PASSWORD_HASHERS = ["tests.cognitude.test_logins.CountingHasher"]
    client = redis.Redis.from_url(TEST_REDIS_URL)
    stale = list(client.scan_iter(KEY_PREFIX + "*"))
    if stale:
        client.delete(*stale)
    for name in ("ann", "ben"):
        get_user_model().objects.create_user(username=name, password="right-" + name)
    return settings


def sign_in(username: str, password: str, *, address: str = "10.0.0.1",
            path: str = LOGIN) -> tuple[Client, str]:
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": username, "password": password})
    return client, response.content.decode()


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_it_refuses_even_the_right_password_after_the_failures(throttle):
    for _ in range(3):
        assert "correct username and password" in sign_in("ann", "wrong")[1]

    client, page = sign_in("ann", "right-ann")

    assert not signed_in(client)
    assert "Too many failed sign-ins for this account or from this address" in page
    assert "Try again in 60 seconds" in page


def test_it_refuses_before_hashing_the_password(throttle):
    for _ in range(3):
        sign_in("ann", "wrong")
    CountingHasher.calls = 0

    for _ in range(20):
        sign_in("ann", "wrong")
    sign_in("nobody", "wrong", address="10.0.0.1")  # the address still has room

    assert CountingHasher.calls == 1


def test_it_lets_the_lockout_end_by_itself(throttle):
    throttle.COGNITUDE_LOGIN_LOCKOUT_SECONDS = 1
    for _ in range(3):
        sign_in("ann", "wrong")
    assert not signed_in(sign_in("ann", "right-ann")[0])

    time.sleep(1.1)

    assert signed_in(sign_in("ann", "right-ann")[0])


def test_it_leaves_other_accounts_and_addresses_alone(throttle):
    for _ in range(3):
        sign_in("ann", "wrong", address="10.0.0.1")

    assert signed_in(sign_in("ben", "right-ben", address="10.0.0.1")[0])
    assert not signed_in(sign_in("ann", "right-ann", address="10.0.0.2")[0])


def test_it_locks_an_address_guessing_at_many_accounts(throttle):
    for n in range(6):
        sign_in(f"user{n}", "wrong", address="10.0.0.9")

    client, page = sign_in("ben", "right-ben", address="10.0.0.9")

    assert not signed_in(client) and "Too many failed sign-ins" in page
    assert signed_in(sign_in("ben", "right-ben", address="10.0.0.10")[0])


def test_it_clears_an_accounts_failures_on_a_right_password(throttle):
    for _ in range(2):
        sign_in("ann", "wrong")
    assert signed_in(sign_in("ann", "right-ann")[0])

    for _ in range(2):
        sign_in("ann", "wrong")

    assert signed_in(sign_in("ann", "right-ann")[0])


def test_it_throttles_the_admin_login_too(throttle):
    get_user_model().objects.create_superuser(username="root", password="right-root")
    for _ in range(3):
        sign_in("root", "wrong", path="/admin/login/")

    client, page = sign_in("root", "right-root", path="/admin/login/")

    assert not signed_in(client)
    assert "Too many failed sign-ins" in page


def test_it_throttles_guessing_the_old_password_on_the_change_page(throttle):
    client, _ = sign_in("ann", "right-ann")
    assert signed_in(client)

    def change(old: str) -> str:
        return client.post("/accounts/password/", {
            "old_password": old, "new_password1": "n3w-Passw0rd-ann",
            "new_password2": "n3w-Passw0rd-ann"}).content.decode()

    for _ in range(3):
        assert "Your old password was entered incorrectly" in change("wrong")
    CountingHasher.calls = 0
    page = change("right-ann")

    assert "Too many failed sign-ins for this account or from this address" in page
    assert CountingHasher.calls == 0  # refused before the hasher
    user = get_user_model().objects.get(username="ann")
    assert user.check_password("right-ann")  # unchanged
    # The account's sign-in is locked out by the same count.
    assert not signed_in(sign_in("ann", "right-ann", address="10.0.0.2")[0])


def test_it_shares_the_count_between_processes(throttle):
    # Another web process records ann's failures against the same Redis.
    script = ("import django; django.setup()\n"
              "from cognitude.logins import login_failed\n"
              "for _ in range(3): login_failed(request=None, username='ann')\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cognitude.settings",
           "COGNITUDE_LIMITS_REDIS_URL": TEST_REDIS_URL,
           "COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT": "3"}
    subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, env=env, check=True,
                   timeout=30)

    client, page = sign_in("ann", "right-ann")

    assert not signed_in(client) and "Too many failed sign-ins" in page


def test_it_fails_open_when_its_redis_does_not_answer(throttle):
    # A closed port: refused at once. A down Redis must not lock operators out.
    throttle.COGNITUDE_LIMITS_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    for _ in range(4):
        assert "correct username and password" in sign_in("ann", "wrong")[1]

    assert signed_in(sign_in("ann", "right-ann")[0])
