"""Reads of limits and budgets, always through the organization they belong to."""

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Count, QuerySet, Sum

from analytics.models import RequestLog
from organizations.models import Organization
from ratelimit.models import Budget, BudgetCrossing, Limit, LimitChange, LimitPolicy
from ratelimit.periods import REJECTION_REASONS
from ratelimit.snapshot import BudgetSpec, LimitSpec, OrgLimits


def org_limits_get(*, org_id: int) -> OrgLimits:
    """The request path's snapshot of one organization's limits, budgets and policy."""
    organization = Organization.objects.only("pk", "time_zone").get(pk=org_id)
    policy = LimitPolicy.objects.filter(organization_id=org_id).first()
    limits = {
        (row.api_key_id, row.model): LimitSpec(
            key_id=row.api_key_id,
            key_prefix=row.api_key.prefix if row.api_key else "",
            model=row.model,
            requests_per_minute=row.requests_per_minute,
            tokens_per_minute=row.tokens_per_minute,
            requests_per_day=row.requests_per_day,
            concurrent_requests=row.concurrent_requests,
        )
        for row in Limit.objects.filter(organization_id=org_id).select_related("api_key")
    }
    budgets = tuple(
        BudgetSpec(id=row.pk, key_id=row.api_key_id,
                   key_prefix=row.api_key.prefix if row.api_key else "",
                   period=row.period, limit_usd=row.limit_usd, soft=row.soft)
        for row in Budget.objects.filter(organization_id=org_id).select_related("api_key")
    )
    return OrgLimits(org_id=org_id, time_zone=ZoneInfo(organization.time_zone),
                     fail_closed=bool(policy and policy.fail_closed),
                     limits=limits, budgets=budgets)


def period_spend(*, org_id: int, key_id: int | None, since: datetime) -> Decimal:
    """What the records say was spent since `since`, by the organization or one key:
    the truth a budget's counter is rebuilt from. Hits and failures cost nothing,
    unpriced requests are not counted (their cost is unknown, NULL)."""
    records = RequestLog.objects.filter(organization_id=org_id, created_at__gte=since)
    if key_id is not None:
        records = records.filter(api_key_id=key_id)
    return records.aggregate(spend=Sum("cost"))["spend"] or Decimal(0)


def limits_for_org(*, organization: Organization) -> QuerySet[Limit]:
    return (Limit.objects.filter(organization=organization).select_related("api_key")
            .order_by("api_key__prefix", "model"))


def budgets_for_org(*, organization: Organization) -> QuerySet[Budget]:
    return (Budget.objects.filter(organization=organization).select_related("api_key")
            .order_by("api_key__prefix", "period"))


def limit_policy_get(*, organization: Organization) -> LimitPolicy:
    """The organization's policy; an unsaved default one (fail open) if it has none."""
    return (LimitPolicy.objects.filter(organization=organization).first()
            or LimitPolicy(organization=organization))


def limit_changes_for_org(*, organization: Organization) -> QuerySet[LimitChange]:
    return LimitChange.objects.filter(organization=organization).select_related("actor")


def budget_crossings_for_org(*, organization: Organization) -> QuerySet[BudgetCrossing]:
    return (BudgetCrossing.objects.filter(organization=organization)
            .select_related("api_key").order_by("-at"))


def rejections_by_reason(*, organization: Organization, start: datetime,
                         end: datetime) -> list[dict]:
    """Requests the limits refused in [start, end), counted by reason, most first."""
    rows = (RequestLog.objects
            .filter(organization=organization, created_at__gte=start, created_at__lt=end,
                    error_type__in=list(REJECTION_REASONS))
            .values("error_type").annotate(requests=Count("id"))
            .order_by("-requests", "error_type"))
    return [{"reason": row["error_type"], "label": REJECTION_REASONS[row["error_type"]],
             "requests": row["requests"]} for row in rows]
