"""Login throttling for the dashboard's and Django admin's sign-in, shared by every process.

Failed sign-ins are counted per account (the username as typed) and per client address.
Once either count reaches its limit, sign-ins for that account, or from that address,
are refused for COGNITUDE_LOGIN_LOCKOUT_SECONDS, the right password included, and the
refusal comes before the password hasher runs: a flood of wrong passwords costs a Redis
round trip each, not a PBKDF2 (which shares the process with whatever else it serves).
The lockout ends by itself when its counter expires.

The counters live in the limits Redis (COGNITUDE_LIMITS_REDIS_URL: the one that never
evicts), so all web processes share them; without one (the embedded defaults: one
process) in this process's memory. A Redis that does not answer fails open, logged: a
down Redis must not lock every operator out of the admin.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.contrib.auth.views import PasswordChangeView
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from cognitude.redis_urls import sync_redis

log = logging.getLogger("cognitude.logins")

KEY_PREFIX = "cognitude:login-failures:"


@dataclass(frozen=True)
class Counter:
    key: str
    limit: int


def _counters(request: HttpRequest | None, username: str | None) -> list[Counter]:
    counters = []
    if username and settings.COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT:
        # Case-folded: "Alice" and "alice" are one account to an attacker guessing.
        counters.append(Counter(KEY_PREFIX + "account:" + username.strip().casefold()[:150],
                                settings.COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT))
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    if address and settings.COGNITUDE_LOGIN_FAILURES_PER_ADDRESS:
        counters.append(Counter(KEY_PREFIX + "address:" + address,
                                settings.COGNITUDE_LOGIN_FAILURES_PER_ADDRESS))
    return counters


class _MemoryStore:
    """One process's counters (embedded mode), with the same expiry rules as Redis's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (failures, expires at)

    def _live(self, key: str, now: float) -> tuple[int, float]:
        count, expires = self._counts.get(key, (0, 0.0))
        return (count, expires) if expires > now else (0, 0.0)

    def blocked_for(self, counters: list[Counter]) -> float:
        now = time.monotonic()
        with self._lock:
            return max([expires - now for c in counters
                        for count, expires in [self._live(c.key, now)] if count >= c.limit],
                       default=0.0)

    def fail(self, counters: list[Counter], window: float) -> None:
        now = time.monotonic()
        with self._lock:
            for c in counters:
                count, expires = self._live(c.key, now)
                count += 1
                # The window starts at the first failure; reaching the limit starts a
                # full lockout from now.
                if count == 1 or count >= c.limit:
                    expires = now + window
                self._counts[c.key] = (count, expires)

    def clear(self, counters: list[Counter]) -> None:
        with self._lock:
            for c in counters:
                self._counts.pop(c.key, None)


class _RedisStore:
    def __init__(self, url: str) -> None:
        timeout = settings.COGNITUDE_LIMITS_REDIS_TIMEOUT
        # A Sentinel set too (redis+sentinel://): the client finds the master itself.
        self._redis = sync_redis(url, socket_timeout=timeout,
                                 socket_connect_timeout=timeout)

    def blocked_for(self, counters: list[Counter]) -> float:
        pipe = self._redis.pipeline(transaction=False)
        for c in counters:
            pipe.get(c.key)
            pipe.pttl(c.key)
        answers = pipe.execute()
        waits = [ttl / 1000 for c, count, ttl in zip(counters, answers[::2], answers[1::2],
                                                     strict=True)
                 if count is not None and int(count) >= c.limit and ttl > 0]
        return max(waits, default=0.0)

    def fail(self, counters: list[Counter], window: float) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for c in counters:
            # SET NX starts the window at the first failure; INCR keeps its expiry.
            pipe.set(c.key, 0, ex=int(window), nx=True)
            pipe.incr(c.key)
        counts = pipe.execute()[1::2]
        reached = [c for c, count in zip(counters, counts, strict=True) if count >= c.limit]
        if reached:
            pipe = self._redis.pipeline(transaction=False)
            for c in reached:
                pipe.expire(c.key, int(window))
            pipe.execute()

    def clear(self, counters: list[Counter]) -> None:
        self._redis.delete(*(c.key for c in counters))


_store: _MemoryStore | _RedisStore | None = None
_store_url: str | None = None


def _current_store() -> _MemoryStore | _RedisStore:
    global _store, _store_url
    url = settings.COGNITUDE_LIMITS_REDIS_URL
    if _store is None or url != _store_url:  # settings changed (tests)
        _store = _RedisStore(url) if url else _MemoryStore()
        _store_url = url
    return _store


def login_blocked_for(*, request: HttpRequest | None, username: str | None) -> float:
    """Seconds until this account and address may try to sign in again (0: they may).
    Never hashes a password."""
    counters = _counters(request, username)
    if not counters:
        return 0.0
    try:
        return _current_store().blocked_for(counters)
    except redis.RedisError as exc:
        log.warning("login throttle unavailable, not throttling: %s", exc)
        return 0.0


def login_failed(*, request: HttpRequest | None, username: str | None) -> None:
    """Count a failed sign-in against the account and the address."""
    counters = _counters(request, username)
    if not counters:
        return
    try:
        _current_store().fail(counters, settings.COGNITUDE_LOGIN_LOCKOUT_SECONDS)
    except redis.RedisError as exc:
        log.warning("login throttle unavailable, failure not counted: %s", exc)


def login_succeeded(*, username: str | None) -> None:
    """A right password clears its account's failures (not the address's: one good
    account must not reset an address that is guessing at others)."""
    counters = [c for c in _counters(None, username)]
    if counters:
        try:
            _current_store().clear(counters)
        except redis.RedisError as exc:
            log.warning("login throttle unavailable: %s", exc)


def throttled_message(seconds: float) -> str:
    wait = (f"{math.ceil(seconds / 60)} minutes" if seconds > 90
            else f"{math.ceil(seconds)} seconds")
    return ("Too many failed sign-ins for this account or from this address. "
            f"Try again in {wait}.")


class ThrottledModelBackend(ModelBackend):
    """ModelBackend behind the throttle: refused before the hasher runs, failures
    counted. Every path that checks a password (the login forms, admin, any later
    `authenticate()` call) comes through here."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs):
        if username is None:
            username = kwargs.get("email")
        if login_blocked_for(request=request, username=username):
            # Stops authenticate() from trying further backends.
            raise PermissionDenied("login throttled")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failed(request=request, username=username)
        else:
            login_succeeded(username=username)
        return user


class _ThrottleMessage:
    """Checks the throttle before the form authenticates, so a throttled sign-in gets a
    message saying so (and when to come back), not "wrong password"."""

    request: HttpRequest | None

    def clean(self):
        username = self.data.get("username")
        blocked = login_blocked_for(request=self.request, username=username)
        if blocked:
            raise forms.ValidationError(throttled_message(blocked), code="throttled")
        return super().clean()


class ThrottledAuthenticationForm(_ThrottleMessage, AuthenticationForm):
    """The dashboard's sign-in form."""


class ThrottledAdminAuthenticationForm(_ThrottleMessage, AdminAuthenticationForm):
    """Django admin's sign-in form."""


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """The old password checked behind the sign-in throttle, counted against the same
    account and address: a session left open, or taken, must not be a way to guess the
    password without limit (Django's form checks it with no throttle at all)."""

    def __init__(self, user, *args, request: HttpRequest | None = None, **kwargs) -> None:
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        username = self.user.get_username()
        blocked = login_blocked_for(request=self.request, username=username)
        if blocked:
            raise forms.ValidationError(throttled_message(blocked), code="throttled")
        old_password = self.cleaned_data["old_password"]
        if not self.user.check_password(old_password):
            login_failed(request=self.request, username=username)
            raise forms.ValidationError(self.error_messages["password_incorrect"],
                                        code="password_incorrect")
        return old_password


class ThrottledPasswordChangeView(PasswordChangeView):
    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self) -> dict:
        return {**super().get_form_kwargs(), "request": self.request}
