"""What the request path knows of an organization's limits and budgets, and of model
prices: frozen snapshots built from the database off the event loop and kept in the
process for a few seconds, so that a request makes no query of its own.

An edit reaches every process within COGNITUDE_LIMITS_CACHE_SECONDS.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

from analytics.prices import PriceBook
from cognitude.db import DatabaseUnavailable, read_in_db_thread
from ratelimit.keys import scope_of

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One Limit row. `key_id` None: the organization's; `model` "": every model."""

    key_id: int | None
    key_prefix: str
    model: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    requests_per_day: int | None
    concurrent_requests: int | None

    @property
    def scope(self) -> str:
        return scope_of(self.key_id, self.model)

    @property
    def label(self) -> str:
        who = "organization" if self.key_id is None else f"key {self.key_prefix}"
        return f"{who}, model {self.model}" if self.model else who


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    id: int
    key_id: int | None
    key_prefix: str
    period: str  # "day" | "month"
    limit_usd: Decimal
    soft: bool

    @property
    def scope(self) -> str:
        return scope_of(self.key_id)

    @property
    def label(self) -> str:
        daily = "daily" if self.period == "day" else "monthly"
        who = "organization" if self.key_id is None else f"key {self.key_prefix}"
        return f"the {who}'s {daily} budget of ${self.limit_usd:f}"


@dataclass(frozen=True, slots=True)
class OrgLimits:
    org_id: int
    time_zone: ZoneInfo
    fail_closed: bool
    limits: dict[tuple[int | None, str], LimitSpec] = field(default_factory=dict)
    budgets: tuple[BudgetSpec, ...] = ()
    # (key id, model) -> what applies to it, prepared once (ratelimit.gate.Plan).
    plans: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        return not self.limits and not self.budgets


class Snapshots(Generic[K, V]):
    """Values loaded by a synchronous `load(key)` in a database thread and kept for
    `seconds`; concurrent requests for the same stale key share one load."""

    def __init__(self, load: Callable[[K], V], seconds: Callable[[], float],
                 max_entries: int = 10_000) -> None:
        self._load = load
        self._seconds = seconds
        self._max_entries = max_entries
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    def fresh(self, key: K) -> V | None:
        """The value if it is loaded and fresh: the request path's way, with no await."""
        found = self._values.get(key)
        if found is not None and found[0] > time.monotonic():
            return found[1]
        return None

    async def get(self, key: K) -> V:
        found = self.fresh(key)
        if found is not None:
            return found
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await read_in_db_thread(self._load, key)
        except DatabaseUnavailable as exc:
            # PostgreSQL down: what it said lately stands for a while, as for the key
            # that brought this request (proxy/auth.py).
            found = self._values.get(key)
            if found is not None and time.monotonic() < found[0] + _stale_seconds():
                future.set_result(found[1])
                return found[1]
            future.set_exception(exc)
            future.exception()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            self._loading.pop(key, None)
        if len(self._values) >= self._max_entries:
            self._values.clear()
        self._values[key] = (time.monotonic() + self._seconds(), value)
        future.set_result(value)
        return value


def _cache_seconds() -> float:
    from django.conf import settings

    return settings.COGNITUDE_LIMITS_CACHE_SECONDS


def _stale_seconds() -> float:
    from django.conf import settings

    return settings.COGNITUDE_AUTH_STALE_SECONDS


def _load_org_limits(org_id: int) -> OrgLimits:
    from ratelimit.selectors import org_limits_get

    return org_limits_get(org_id=org_id)


def _load_prices(_: None) -> PriceBook:
    return PriceBook.load()


org_limits: Snapshots[int, OrgLimits] = Snapshots(_load_org_limits, _cache_seconds)
price_books: Snapshots[None, PriceBook] = Snapshots(_load_prices, _cache_seconds, 1)
