"""Reads of limits and budgets, always through the organization they belong to."""

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Count, QuerySet, Sum

from analytics.models import RequestLog
from organizations import keys
from organizations.errors import ApiKeyNotFound
from organizations.models import ApiKey, Organization
from ratelimit.errors import BudgetNotFound, LimitNotFound
from ratelimit.models import Budget, BudgetCrossing, Limit, LimitChange, LimitPolicy
from ratelimit.periods import REJECTION_REASONS, BudgetPeriod, budget_period
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


def limit_get_for_org(*, organization: Organization, limit_id: int) -> Limit:
    """Raises LimitNotFound for anyone else's."""
    found = limits_for_org(organization=organization).filter(pk=limit_id).first()
    if found is None:
        raise LimitNotFound("No such limit")
    return found


def budgets_for_org(*, organization: Organization) -> QuerySet[Budget]:
    return (Budget.objects.filter(organization=organization).select_related("api_key")
            .order_by("api_key__prefix", "period"))


def budget_get_for_org(*, organization: Organization, budget_id: int) -> Budget:
    """Raises BudgetNotFound for anyone else's."""
    found = budgets_for_org(organization=organization).filter(pk=budget_id).first()
    if found is None:
        raise BudgetNotFound("No such budget")
    return found


def budget_find(*, organization: Organization, api_key: ApiKey | None,
                period: str) -> Budget:
    """The budget of this scope and period; raises BudgetNotFound."""
    found = budgets_for_org(organization=organization).filter(api_key=api_key,
                                                              period=period).first()
    if found is None:
        raise BudgetNotFound("No such budget")
    return found


def budget_period_now(*, budget: Budget) -> BudgetPeriod:
    """The budget's current period, in its organization's time zone."""
    return budget_period(budget.period, ZoneInfo(budget.organization.time_zone))


def budget_spend(*, budget: Budget) -> Decimal:
    """What the records say was spent against the budget in its current period."""
    period = budget_period_now(budget=budget)
    return period_spend(org_id=budget.organization_id, key_id=budget.api_key_id,
                        since=period.start)


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


def api_key_by_prefix(*, organization: Organization, prefix: str) -> ApiKey:
    """The organization's key shown as `prefix` (cog_ and 8 characters; a whole key
    works too). Raises ApiKeyNotFound for anyone else's."""
    found = ApiKey.objects.filter(organization=organization,
                                  prefix=keys.lookup_prefix(prefix.strip())).first()
    if found is None:
        raise ApiKeyNotFound("No such API key")
    return found
