"""Prometheus metrics of the gateway's requests, and the /metrics view (which serves
the pipeline's too).

The /v1 request path never touches these: the event flusher counts requests from the
request events it already handles, once per flush. With PROMETHEUS_MULTIPROC_DIR
set (several web processes, a worker on the same host) prometheus-client keeps the values
in files there and `/metrics` sums them; without it, this process's registry is served.
"""

import atexit
import hmac
import os
from collections import Counter as Tally
from collections.abc import Iterable

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess

from analytics.events import RequestEvent
from caching.outcomes import UPSTREAM_OUTCOMES

REQUESTS = Counter("cognitude_requests", "Proxied requests, by cache outcome and HTTP status",
                   ["outcome", "status"])
LATENCY = Histogram("cognitude_request_duration_seconds",
                    "Time the gateway took to answer a proxied request, by cache outcome",
                    ["outcome"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30,
                             60, 120))
UPSTREAM_ERRORS = Counter("cognitude_upstream_errors",
                          "Requests the upstream provider failed, by provider and error",
                          ["provider", "error"])
# Errors that are not the upstream's fault.
_NOT_UPSTREAM = frozenset({"", "client_disconnected"})


def requests_observe(events: Iterable[RequestEvent]) -> None:
    """Count a flush's worth of request events (the pipeline's observer of the kind):
    one counter update per label set, one histogram observation per request."""
    outcomes: Tally[tuple[str, int]] = Tally()
    upstream_errors: Tally[tuple[str, str]] = Tally()
    latencies: dict[str, list[float]] = {}
    for event in events:
        outcome, status = event.cache_outcome, event.status
        outcomes[(outcome, status)] += 1
        latencies.setdefault(outcome, []).append(event.latency_ms / 1000)
        if outcome in UPSTREAM_OUTCOMES and (
            status >= 500 or event.error_type not in _NOT_UPSTREAM
        ):
            upstream_errors[(event.provider, event.error_type or f"http_{status}")] += 1
    for (outcome, status), count in outcomes.items():
        REQUESTS.labels(outcome, str(status)).inc(count)
    for outcome, seconds in latencies.items():
        histogram = LATENCY.labels(outcome)
        for value in seconds:
            histogram.observe(value)
    for (provider, error), count in upstream_errors.items():
        UPSTREAM_ERRORS.labels(provider, error).inc(count)


def _forget_this_process() -> None:
    """Drop this process's live gauges (the pipeline's buffer and spool depth) from the
    shared files, so a process that has exited stops adding to the sums."""
    multiprocess.mark_process_dead(os.getpid())


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    atexit.register(_forget_this_process)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return prometheus_client.REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics in Prometheus's text format, for the operator's scraper; with
    COGNITUDE_METRICS_TOKEN set, only for `Authorization: Bearer <that token>`."""
    token = settings.COGNITUDE_METRICS_TOKEN
    if token and not hmac.compare_digest(
        request.headers.get("Authorization", ""), f"Bearer {token}"
    ):
        return HttpResponse("Unauthorized\n", status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": "Bearer"})
    return HttpResponse(prometheus_client.generate_latest(_registry()),
                        content_type=prometheus_client.CONTENT_TYPE_LATEST)
