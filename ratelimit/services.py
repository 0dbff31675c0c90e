"""Writes of limits, budgets and policies, each one audited (LimitChange: who, when,
the values before and after); and the record of a budget crossing.

Every process sees a change within COGNITUDE_LIMITS_CACHE_SECONDS.
"""

from datetime import date
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from organizations.models import ApiKey, Organization
from organizations.services import Actor  # who makes a change, as the audit trail's
from ratelimit.models import Budget, BudgetCrossing, Limit, LimitChange, LimitPolicy, scope_label
from ratelimit.snapshot import BudgetSpec

LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "requests_per_day",
                "concurrent_requests")


def _audit(*, organization: Organization, target: str, subject: str, actor: Actor,
           old: dict | None, new: dict | None) -> None:
    if old != new:
        LimitChange.objects.create(organization=organization, target=target, subject=subject,
                                   actor=actor.user, actor_label=actor.label[:150],
                                   old=old, new=new)


def _lock_scopes(organization: Organization) -> None:
    """Take the organization's row for the rest of the transaction. A scope's limit or
    budget row that does not exist yet cannot be locked, so two requests setting it at
    once would both insert it and the second would fail on the unique constraint."""
    list(Organization.objects.select_for_update().filter(pk=organization.pk)
         .values_list("pk", flat=True))


def _check_key(organization: Organization, api_key: ApiKey | None) -> None:
    if api_key is not None and api_key.organization_id != organization.pk:
        raise ValidationError("That API key belongs to another organization")


def _limit_values(limit: Limit | None) -> dict | None:
    return None if limit is None else {name: getattr(limit, name) for name in LIMIT_FIELDS}


def limit_set(*, organization: Organization, api_key: ApiKey | None = None, model: str = "",
              values: dict[str, int | None], actor: Actor) -> Limit | None:
    """Set some of a scope's limits (`values`: field -> number, 0 or None for none);
    the fields not named keep theirs. A scope left with no limit at all is deleted
    (returns None)."""
    _check_key(organization, api_key)
    unknown = set(values) - set(LIMIT_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown limit {sorted(unknown)[0]!r}")
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValidationError(f"{name} must be a whole number, 0 or more")
    model = model.strip()
    if len(model) > Limit._meta.get_field("model").max_length:
        raise ValidationError("That model name is too long")
    with transaction.atomic():
        _lock_scopes(organization)
        limit = (Limit.objects.select_for_update()
                 .filter(organization=organization, api_key=api_key, model=model).first())
        old = _limit_values(limit)
        merged = {**(old or dict.fromkeys(LIMIT_FIELDS)),
                  **{name: value or None for name, value in values.items()}}
        if all(value is None for value in merged.values()):
            if limit is not None:
                limit.delete()
            limit = None
        elif limit is None:
            limit = Limit.objects.create(organization=organization, api_key=api_key,
                                         model=model, **merged)
        else:
            for name, value in merged.items():
                setattr(limit, name, value)
            limit.save(update_fields=[*LIMIT_FIELDS, "updated_at"])
        _audit(organization=organization, target=LimitChange.Target.LIMIT,
               subject=scope_label(api_key, model), actor=actor, old=old,
               new=_limit_values(limit))
    return limit


def limit_delete(*, limit: Limit, actor: Actor) -> None:
    limit_set(organization=limit.organization, api_key=limit.api_key, model=limit.model,
              values=dict.fromkeys(LIMIT_FIELDS), actor=actor)


def _budget_values(budget: Budget | None) -> dict | None:
    if budget is None:
        return None
    return {"period": budget.period, "limit_usd": str(budget.limit_usd), "soft": budget.soft}


def budget_set(*, organization: Organization, api_key: ApiKey | None = None, period: str,
               limit_usd: Decimal, soft: bool = False, actor: Actor) -> Budget:
    """Create or change the organization's (or a key's) budget for a day or a month."""
    _check_key(organization, api_key)
    if period not in Budget.Period.values:
        raise ValidationError(f"period must be one of {', '.join(Budget.Period.values)}")
    limit_usd = Decimal(limit_usd)
    if not limit_usd.is_finite() or limit_usd < 0:
        raise ValidationError("The budget must be a number of USD, 0 or more")
    limit_usd = limit_usd.quantize(Decimal("0.0001"))
    if limit_usd.adjusted() >= 10:
        raise ValidationError("That budget is too large")
    with transaction.atomic():
        _lock_scopes(organization)
        budget = (Budget.objects.select_for_update()
                  .filter(organization=organization, api_key=api_key, period=period).first())
        old = _budget_values(budget)
        if budget is None:
            budget = Budget.objects.create(organization=organization, api_key=api_key,
                                           period=period, limit_usd=limit_usd, soft=soft)
        else:
            budget.limit_usd, budget.soft = limit_usd, soft
            budget.save(update_fields=["limit_usd", "soft", "updated_at"])
        _audit(organization=organization, target=LimitChange.Target.BUDGET,
               subject=f"{scope_label(api_key, '')} / {period}", actor=actor, old=old,
               new=_budget_values(budget))
    return budget


def budget_delete(*, budget: Budget, actor: Actor) -> None:
    with transaction.atomic():
        old = _budget_values(budget)
        subject = f"{scope_label(budget.api_key, '')} / {budget.period}"
        budget.delete()
        _audit(organization=budget.organization, target=LimitChange.Target.BUDGET,
               subject=subject, actor=actor, old=old, new=None)


def limit_policy_set(*, organization: Organization, fail_closed: bool,
                     actor: Actor) -> LimitPolicy:
    """Fail open (serve, held to per-process limits) or closed (503) while the limits
    Redis is unreachable."""
    with transaction.atomic():
        policy, _ = LimitPolicy.objects.select_for_update().get_or_create(
            organization=organization)
        old = {"fail_closed": policy.fail_closed}
        policy.fail_closed = fail_closed
        policy.save(update_fields=["fail_closed", "updated_at"])
        _audit(organization=organization, target=LimitChange.Target.POLICY,
               subject="organization", actor=actor, old=old,
               new={"fail_closed": fail_closed})
    return policy


def budget_crossing_record(*, org_id: int, budget: BudgetSpec, period_start: date,
                           spend_usd: Decimal) -> bool:
    """Record that a budget's spend reached its limit in a period; once per budget and
    period however many processes see it (False when it was already recorded, or the
    budget is gone)."""
    if not Budget.objects.filter(pk=budget.id, organization_id=org_id).exists():
        return False
    try:
        with transaction.atomic():
            BudgetCrossing.objects.create(
                organization_id=org_id, budget_id=budget.id, api_key_id=budget.key_id,
                period=budget.period, period_start=period_start, limit_usd=budget.limit_usd,
                spend_usd=spend_usd, soft=budget.soft)
    except IntegrityError:
        return False
    return True
