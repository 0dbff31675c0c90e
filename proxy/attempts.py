"""One request's way through its route: which target to try next, whether a failure
moves it on, and what the headers say about it.

A failure moves the request to the next target when the route retries on it
(`retry_on`: connect errors, timeouts, 429, 5xx; all four by default), and a 404 always
does (the model may exist elsewhere; if every target says 404 the client gets it). Any
other answer, the caller's 4xx included, is the answer. Each target is tried once, in
the plan's order, then COGNITUDE_ROUTE_RETRIES more rounds; a target tried again waits
an exponential backoff with jitter, at least its Retry-After. No attempt after the first
starts, and no wait ends, past COGNITUDE_ROUTE_TIME_BUDGET_SECONDS after the first began.
"""

import asyncio
import random
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime

from django.conf import settings

from proxy.http import header_value
from proxy.providers import UpstreamError
from routing.balance import latencies, latency_note
from routing.breakers import Breakers, breakers
from routing.plan import route_plan
from routing.table import Route, Target

_rng = random.Random()

# Which provider kinds speak each endpoint: the Anthropic adapter translates chat only;
# the Responses API and Messages API go to their own kind untranslated.
_OPENAI_KINDS = frozenset({"openai", "azure"})
_KINDS = {
    "chat/completions": frozenset({"openai", "azure", "anthropic"}),
    "completions": _OPENAI_KINDS,
    "embeddings": _OPENAI_KINDS,
    "responses": _OPENAI_KINDS,
    "messages": frozenset({"anthropic"}),
}

# Read once: they are the same for every request.
_BUDGET = settings.COGNITUDE_ROUTE_TIME_BUDGET_SECONDS
_ROUNDS = 1 + settings.COGNITUDE_ROUTE_RETRIES
_BACKOFF = settings.COGNITUDE_ROUTE_BACKOFF_SECONDS


def targets_for(route: Route, endpoint: str) -> Route:
    """The route narrowed to the targets whose provider speaks `endpoint`."""
    kinds = _KINDS[endpoint]
    if all(target.provider.kind in kinds for target in route.targets):
        return route
    return replace(route, targets=tuple(t for t in route.targets if t.provider.kind in kinds))


def status_reason(status: int) -> str | None:
    """Why an upstream status is a failed attempt, or None: it is the answer."""
    if status == 429 or status == 404 or status >= 500:
        return str(status)
    return None


def error_reason(exc: UpstreamError) -> str:
    """Why an attempt that got no usable answer failed."""
    if exc.status == 504:
        return "timeout"
    return "stream" if exc.code == "upstream_stream_broken" else "connect"


def _retry_class(reason: str) -> str:
    return "5xx" if reason[0] == "5" or reason == "stream" else reason


def retry_after_seconds(value: str | None) -> float:
    """A Retry-After header's delay: seconds, or an HTTP date; 0 when absent or bad."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True, slots=True)
class Failed:
    target: Target
    reason: str  # "connect", "timeout", "429", "500", ..., "404", "open", "stream"


class Attempts:
    @classmethod
    async def begin(cls, route: Route) -> "Attempts":
        """A request's attempts, from now: the time budget counts from the first (time
        spent before, waiting on an identical request in flight say, is not upstream's)."""
        found = breakers()
        await found.refresh()
        return cls(route, started=time.perf_counter(), breakers=found)

    def __init__(self, route: Route, *, started: float, breakers: Breakers) -> None:
        self.route = route
        self._breakers = breakers
        plan = route_plan(route=route, blocked=breakers.blocked(), latency=latencies(),
                          rng=_rng)
        self._plan = plan.targets
        self.failed = [Failed(target, "open") for target in plan.skipped]
        self.made = 0
        self.target: Target | None = None  # the current (or last) attempt's
        self._target_failed: Failed | None = None  # and how, if it failed
        self._position = 0
        self._deadline = started + _BUDGET
        self._tries: dict[str, int] = {}
        self._ready_at: dict[str, float] = {}

    async def next(self) -> Target | None:
        """The next target to try, once any wait for it is over; None: stop, answering
        with the last attempt's outcome (or, with no attempt made, that none could be)."""
        plan = self._plan
        while self._position < len(plan) * _ROUNDS:
            again = self._position >= len(plan)
            target = plan[self._position % len(plan)]
            key = target.key
            self._position += 1
            if again and self._breakers.is_blocked(key):
                continue
            now = time.perf_counter()
            ready_at = max(now, self._ready_at.get(key, now))
            if ready_at > self._deadline and self.made:
                continue
            if ready_at > now:
                await asyncio.sleep(ready_at - now)
            if self._breakers.needs_probe(key) and not await self._breakers.claim_probe(key):
                self.failed.append(Failed(target, "open"))
                continue
            self.target, self._target_failed = target, None
            self.made += 1
            return target
        return None

    async def answered(self, seconds: float) -> None:
        """The current attempt got an answer (of any status that is not a failure)
        after `seconds` to its first byte."""
        key = self.target.key
        latency_note(key=key, seconds=seconds)
        await self._breakers.success(key)

    async def failure(self, reason: str, *, retry_after: str | None = None) -> bool:
        """The current attempt failed; True if the request goes on to another."""
        target = self.target
        self._target_failed = Failed(target, reason)
        self.failed.append(self._target_failed)
        if reason == "404":
            # Not there: never ask this target again, and its health is not in question.
            self._ready_at[target.key] = float("inf")
            return True
        await self._breakers.failure(target.key)
        tries = self._tries[target.key] = self._tries.get(target.key, 0) + 1
        backoff = _BACKOFF * 2 ** (tries - 1) * (0.5 + _rng.random() / 2)
        self._ready_at[target.key] = time.perf_counter() + max(
            backoff, retry_after_seconds(retry_after))
        return _retry_class(reason) in self.route.retry_on

    def reopens_in(self) -> float:
        """With every target skipped: seconds until the first may be probed."""
        waits = [self._breakers.reopens_in(f.target.key) for f in self.failed]
        return min(waits, default=0.0)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """X-Cognitude-Provider, -Model (of the attempt answering), -Attempts, -Fallback
        (`provider:model=reason` for each target failed or skipped before), -Route (for
        a named route)."""
        headers = [(b"x-cognitude-attempts", b"%d" % self.made)]
        if self.target is not None:
            headers += [(b"x-cognitude-provider", header_value(self.target.provider.name)),
                        (b"x-cognitude-model", header_value(self.target.upstream_model))]
        fallback = self.fallback()
        if fallback:
            headers.append((b"x-cognitude-fallback", header_value(fallback)))
        if self.route.explicit:
            headers.append((b"x-cognitude-route", header_value(self.route.name)))
        return headers

    def fallback(self) -> str:
        """The failures before the answer (its own failure, if it is one, is the answer)."""
        if not self.failed:
            return ""
        return "; ".join(f"{f.target.provider.name}:{f.target.upstream_model}={f.reason}"
                         for f in self.failed if f is not self._target_failed)
