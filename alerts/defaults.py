"""The rules every organization starts with (all editable, deletable, with no channel
until the organization adds one): its budget 80 % and 100 % used, and an error rate
over 10 % for 5 minutes."""

from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction

from alerts.models import AlertRule
from organizations.models import Organization

Metric = AlertRule.Metric
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"name": "Budget 80% used", "metric": Metric.BUDGET_USED_PCT, "comparison": "gte",
     "threshold": Decimal(80), "window_seconds": 300, "cooldown_seconds": 24 * 3600},
    {"name": "Budget 100% used", "metric": Metric.BUDGET_USED_PCT, "comparison": "gte",
     "threshold": Decimal(100), "window_seconds": 300, "cooldown_seconds": 24 * 3600},
    {"name": "Error rate over 10%", "metric": Metric.ERROR_RATE_PCT, "comparison": "gt",
     "threshold": Decimal(10), "window_seconds": 300, "cooldown_seconds": 3600},
)


def default_rules_create(*, organization_id: int, rule_model: type = AlertRule) -> int:
    """Create the default rules the organization lacks (by name); returns how many. Safe
    to run twice, and from a migration (`rule_model` the historical model)."""
    created = 0
    for spec in DEFAULT_RULES:
        if rule_model.objects.filter(organization_id=organization_id,
                                     name=spec["name"]).exists():
            continue
        try:
            with transaction.atomic():
                rule_model.objects.create(organization_id=organization_id, is_default=True,
                                          **spec)
            created += 1
        except IntegrityError:
            pass  # made meanwhile by another process
    return created


def organization_created(sender: type, instance: Organization, created: bool,
                         raw: bool = False, **kwargs: Any) -> None:
    """post_save of Organization: a new one gets the default rules (not a fixture's
    raw load, which brings its own rows)."""
    if created and not raw:
        default_rules_create(organization_id=instance.pk)
