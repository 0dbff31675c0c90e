"""Request records and rules for the alert tests, written as the gateway would write
them (the rollup triggers keep HourlyUsage/HourlyLatency from these)."""

import uuid
from datetime import datetime
from decimal import Decimal

from alerts.models import AlertChannel, AlertRule
from alerts.services import RuleSpec, alert_channel_create, alert_rule_create
from analytics.models import RequestLog
from organizations.models import Organization


def add_records(org: Organization, at: datetime, count: int, *, status: int = 200,
                cost: str = "0", latency_ms: float = 100.0, outcome: str = "miss",
                error_type: str = "", model: str = "gpt-4o-mini") -> None:
    RequestLog.objects.bulk_create([
        RequestLog(request_id=uuid.uuid4().hex, organization=org, endpoint="chat",
                   model_requested=model, model_used=model, cache_outcome=outcome,
                   status=status, error_type=error_type, cost=Decimal(cost),
                   latency_ms=latency_ms, created_at=at)
        for _ in range(count)])


def add_rule(org: Organization, *, channels: list[AlertChannel] = (), **spec) -> AlertRule:
    spec.setdefault("name", f"rule {uuid.uuid4().hex[:6]}")
    return alert_rule_create(organization=org, spec=RuleSpec(**spec), channels=channels)


def add_webhook(org: Organization, url: str, name: str = "hook") -> AlertChannel:
    return alert_channel_create(organization=org, name=name, kind="webhook",
                                target=url).channel
