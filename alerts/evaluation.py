"""One evaluation tick: every enabled rule's metric, and the transitions it makes.

The lifecycle of a rule: ok -> firing when its condition becomes true (notify), firing
-> firing again once its cool-down has passed while still true (renotify), firing -> ok
when it is no longer true (resolved). A transition is one conditional UPDATE of the
rule (WHERE seq = the seq read AND state = the state read, seq + 1): of processes
evaluating the same rule at once, PostgreSQL lets exactly one UPDATE match, and only
that process creates the transition's AlertEvent rows (per channel) and enqueues their
delivery when its transaction commits. The unique constraint on (rule, seq, transition,
channel) backs it: a second set of rows for one transition cannot exist.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from alerts import metrics
from alerts.models import AlertChannel, AlertEvent, AlertRule

logger = logging.getLogger("cognitude.alerts")

Metric = AlertRule.Metric
COMPARISONS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}
# Usage metrics: one window query serves all of them for a scope.
USAGE_METRICS = {Metric.SPEND_USD, Metric.ERROR_RATE_PCT, Metric.P95_LATENCY_MS,
                 Metric.CACHE_HIT_RATE_PCT, Metric.LIMIT_REJECTIONS}
DELIVERY_TASK = "alerts.deliver"


class Unknown:
    """The metric could not be read (its store is unreachable): the rule keeps its state."""


UNKNOWN = Unknown()
Value = Decimal | None | Unknown


@dataclass
class TickResult:
    rules: int = 0
    transitions: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0


def condition_holds(rule: AlertRule, value: Value) -> bool:
    """No value (no requests for a rate, no budget) is not a breach."""
    return isinstance(value, Decimal) and COMPARISONS[rule.comparison](value, rule.threshold)


class _Values:
    """The metrics of one tick, each read once for all the rules that need it."""

    def __init__(self, rules: list[AlertRule], now: datetime,
                 budget_floors: dict[int, tuple[date, Decimal]] | None) -> None:
        self.now = now
        self._usage: dict[metrics.Scope, metrics.WindowUsage] = {}
        self._silence: dict[metrics.Scope, Decimal | None] = {}
        self._silence.update({
            metrics.Scope(org_id, 0): minutes
            for org_id, minutes in metrics.minutes_since_traffic_by_org(
                org_ids={r.organization_id for r in rules
                         if r.metric == Metric.NO_TRAFFIC_MINUTES
                         and not _scope(r).filtered}, now=now).items()})
        # What each usage scope's one query must compute, for all its rules.
        self._needs: dict[metrics.Scope, set[str]] = {}
        for rule in rules:
            if rule.metric in USAGE_METRICS:
                self._needs.setdefault(_scope(rule), set()).add(rule.metric)
        wanted = {rule.metric for rule in rules}
        org_ids = {rule.organization_id for rule in rules}
        self._budgets = (metrics.budgets_used_pct(
            org_ids={r.organization_id for r in rules if r.metric == Metric.BUDGET_USED_PCT},
            now=now, floors=budget_floors) if Metric.BUDGET_USED_PCT in wanted else {})
        self._breakers = (metrics.open_breakers_by_org(org_ids=org_ids)
                          if Metric.PROVIDER_FAILING in wanted else {})

    def of(self, rule: AlertRule) -> Value:
        scope = _scope(rule)
        if rule.metric in USAGE_METRICS:
            return self._from_usage(rule.metric, scope)
        if rule.metric == Metric.BUDGET_USED_PCT:
            return self._budgets.get((rule.organization_id, rule.api_key_id))
        if rule.metric == Metric.PROVIDER_FAILING:
            if self._breakers is None:
                return UNKNOWN
            failing = self._breakers.get(rule.organization_id, {})
            return Decimal(failing.get(rule.provider, 0) if rule.provider
                           else sum(failing.values()))
        if rule.metric == Metric.NO_TRAFFIC_MINUTES:
            silence_scope = metrics.Scope(rule.organization_id, 0, rule.model,
                                          rule.api_key_id, rule.provider)
            if silence_scope not in self._silence:
                self._silence[silence_scope] = metrics.minutes_since_traffic(
                    scope=silence_scope, now=self.now)
            return self._silence[silence_scope]
        raise ValueError(f"unknown metric {rule.metric!r}")

    def _from_usage(self, metric: str, scope: metrics.Scope) -> Decimal | None:
        found = self._usage.get(scope)
        if found is None:
            needs = self._needs.get(scope, {metric})
            found = self._usage[scope] = metrics.window_usage(
                scope=scope, now=self.now, rejections=Metric.LIMIT_REJECTIONS in needs,
                latency=Metric.P95_LATENCY_MS in needs)
        if metric == Metric.SPEND_USD:
            return found.cost
        if metric == Metric.ERROR_RATE_PCT:
            return found.error_rate_pct()
        if metric == Metric.CACHE_HIT_RATE_PCT:
            return found.hit_rate_pct()
        if metric == Metric.LIMIT_REJECTIONS:
            return Decimal(found.rejections)
        return (Decimal(found.p95_ms).quantize(Decimal("0.001"))
                if found.p95_ms is not None else None)


def _scope(rule: AlertRule) -> metrics.Scope:
    return metrics.Scope(rule.organization_id, rule.window_seconds, rule.model,
                         rule.api_key_id, rule.provider)


def alerts_evaluate(*, now: datetime | None = None, org_ids: Iterable[int] | None = None,
                    metric: str | None = None,
                    budget_floors: dict[int, tuple[date, Decimal]] | None = None) -> TickResult:
    """Evaluate every enabled rule (or those of `org_ids`, of one `metric`) once and
    take the transitions they call for. Safe to run in several processes at once."""
    started = time.perf_counter()
    now = now or timezone.now()
    rules_qs = AlertRule.objects.filter(enabled=True)
    if org_ids is not None:
        rules_qs = rules_qs.filter(organization_id__in=list(org_ids))
    if metric is not None:
        rules_qs = rules_qs.filter(metric=metric)
    rules = list(rules_qs.order_by("organization_id", "pk"))
    result = TickResult(rules=len(rules))
    values = _Values(rules, now, budget_floors)
    quiet: list[AlertRule] = []
    for rule in rules:
        value = values.of(rule)
        if isinstance(value, Unknown):
            continue
        transition = rule_step(rule=rule, value=value, now=now)
        if transition is not None:
            result.transitions.append((rule.pk, transition))
        else:
            rule.last_value, rule.last_evaluated_at = value, now
            quiet.append(rule)
    _quiet_record(quiet, now)
    result.seconds = time.perf_counter() - started
    return result


def _quiet_record(rules: list[AlertRule], now: datetime) -> None:
    """What the rules that did not move read, for the pages, in one statement (never
    their state, which only a transition writes)."""
    if not rules:
        return
    if connection.vendor != "postgresql":
        AlertRule.objects.bulk_update(rules, ["last_value", "last_evaluated_at"],
                                      batch_size=500)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE alerts_alertrule AS r SET last_value = v.value, last_evaluated_at = %s "
            "FROM unnest(%s::bigint[], %s::numeric[]) AS v(id, value) WHERE r.id = v.id",
            [now, [rule.pk for rule in rules], [rule.last_value for rule in rules]])


def rule_step(*, rule: AlertRule, value: Decimal | None, now: datetime) -> str | None:
    """The transition the value calls for, taken if this process wins it; returns it
    (None when there is none, or another process took it first)."""
    holds = condition_holds(rule, value)
    if rule.state == AlertRule.State.OK:
        if not holds:
            return None
        transition = AlertEvent.Transition.FIRING
    elif not holds:
        transition = AlertEvent.Transition.RESOLVED
    elif (rule.last_notified_at is None
          or now - rule.last_notified_at >= timedelta(seconds=rule.cooldown_seconds)):
        transition = AlertEvent.Transition.RENOTIFY
    else:
        return None
    return transition if _take(rule, transition, value, now) else None


def _take(rule: AlertRule, transition: str, value: Decimal | None, now: datetime) -> bool:
    changes: dict = {"seq": F("seq") + 1, "last_value": value, "last_evaluated_at": now}
    if transition == AlertEvent.Transition.FIRING:
        changes |= {"state": AlertRule.State.FIRING, "state_since": now,
                    "last_notified_at": now}
    elif transition == AlertEvent.Transition.RENOTIFY:
        changes |= {"last_notified_at": now}
    else:
        changes |= {"state": AlertRule.State.OK, "state_since": now, "last_notified_at": now}
    seq = rule.seq + 1
    try:
        with transaction.atomic():
            won = AlertRule.objects.filter(pk=rule.pk, seq=rule.seq,
                                           state=rule.state).update(**changes)
            if not won:
                return False
            events = _events_create(rule, transition, seq, value)
    except IntegrityError:
        # Only if the rule's seq was moved by hand: the rows of that transition exist.
        logger.warning("alert rule %s: transition %s #%d already recorded", rule.pk,
                       transition, seq)
        return False
    rule.seq = seq
    for event in events:
        if event.channel_id is not None:
            transaction.on_commit(partial(alert_event_enqueue, event_id=event.pk))
    return True


def _events_create(rule: AlertRule, transition: str, seq: int,
                   value: Decimal | None) -> list[AlertEvent]:
    channels = list(AlertChannel.objects.filter(rules=rule, enabled=True).order_by("pk"))
    common = {"organization_id": rule.organization_id, "rule": rule, "rule_name": rule.name,
              "metric": rule.metric, "comparison": rule.comparison,
              "transition": transition, "seq": seq, "value": value,
              "threshold": rule.threshold}
    rows = [AlertEvent(**common, channel=channel, channel_name=channel.name,
                       channel_key=channel.pk) for channel in channels]
    if not rows:
        # Nowhere to send it: the transition is history all the same.
        rows = [AlertEvent(**common, status=AlertEvent.Status.DELIVERED,
                           response="no channel", delivered_at=timezone.now())]
    return AlertEvent.objects.bulk_create(rows)


def alert_event_enqueue(*, event_id: int) -> None:
    """Hand one AlertEvent to the delivery task (alerts.delivery's), by the task's name:
    rows wait, pending, if no delivery task is registered."""
    from alerts import tasks  # noqa: F401  (registers the app's tasks in this process)
    from cognitude.celery import app

    task = app.tasks.get(DELIVERY_TASK)
    if task is None:
        logger.warning("no %s task: alert event %s stays pending", DELIVERY_TASK, event_id)
        return
    task.delay(event_id)
