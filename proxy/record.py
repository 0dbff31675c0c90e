"""The record of one request, for analytics: each step of the request fills in its
part, and it is emitted once, when the request is over."""

import time
from dataclasses import dataclass

from django.conf import settings

from analytics.events import RequestEvent
from caching.outcomes import CacheOutcome, CacheTier, hit_outcome
from caching.payload import CachedResponse
from pipeline.buffer import emit
from routing.policy import Decision

# Read once: a settings lookup per request shows in the hit path's profile.
_RECORDING = settings.COGNITUDE_REQUEST_LOG

@dataclass(slots=True)
class Record:
    request_id: str
    endpoint: str
    started: float
    org_id: int | None = None
    api_key_id: int | None = None
    model_requested: str = ""
    model_used: str = ""
    provider: str = ""
    cache_outcome: CacheOutcome = CacheOutcome.NONE
    cache_bypassed: bool = False
    cache_key: str = ""
    status: int = 0
    error_type: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    upstream_latency_ms: float | None = None
    streamed: bool = False
    attempts: int = 0
    fallback: str = ""
    # Smart routing's decision (routing.policy.Decision), when the policy applied.
    route_mode: str = ""
    route_tier: str = ""
    route_score: float | None = None
    route_model: str = ""
    route_baseline: str = ""

    def routed(self, decision: Decision) -> None:
        self.route_mode, self.route_tier, self.route_score = (
            decision.mode, decision.tier, decision.score)
        self.route_model, self.route_baseline = decision.priced_as, decision.baseline

    def hit(self, response: CachedResponse, tier: CacheTier) -> None:
        self.cache_outcome = hit_outcome(tier)
        self.prompt_tokens = response.prompt_tokens
        self.completion_tokens = response.completion_tokens
        # The model that made the answer (a route's target), so the saving is priced on
        # it; entries from before it was kept only know the name asked for.
        self.model_used = response.model or self.model_requested

    def emit(self) -> None:
        if self.org_id is None or not _RECORDING:
            return  # unauthenticated (nobody's analytics to put it in), or recording off
        emit(RequestEvent(
            request_id=self.request_id,
            org_id=self.org_id,
            api_key_id=self.api_key_id,
            endpoint=self.endpoint,
            model_requested=self.model_requested,
            model_used=self.model_used,
            provider=self.provider,
            cache_outcome=self.cache_outcome,
            cache_bypassed=self.cache_bypassed,
            cache_key=self.cache_key,
            status=self.status,
            error_type=self.error_type,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
            upstream_latency_ms=self.upstream_latency_ms,
            streamed=self.streamed,
            created_at=time.time(),
            attempts=self.attempts,
            fallback=self.fallback,
            route_mode=self.route_mode,
            route_tier=self.route_tier,
            route_score=self.route_score,
            route_model=self.route_model,
            route_baseline=self.route_baseline,
        ))
