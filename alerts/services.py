"""Writes for alert rules and channels, the evaluation entry points (beat's tick, the
budget events from the request path), and the vocabulary the commands and API share
(durations such as `5m`, channels such as `slack:URL`)."""

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from alerts.evaluation import TickResult, alerts_evaluate
from alerts.models import AlertChannel, AlertRule
from organizations import crypto
from organizations.models import ApiKey, Organization
from organizations.services import Actor, audit_record, audit_values
from ratelimit.events import BudgetUsageEvent

Metric = AlertRule.Metric
MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 31 * 24 * 3600
MAX_COOLDOWN_SECONDS = 30 * 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
# Webhook signing secrets look like Stripe's: a prefix, then 32 random bytes.
SECRET_PREFIX = "whsec_"
# What the audit trail keeps of a rule and a channel (never a target or a secret).
RULE_FIELDS = ("name", "metric", "comparison", "threshold", "window_seconds",
               "cooldown_seconds", "model", "api_key_id", "provider", "enabled")
CHANNEL_FIELDS = ("name", "kind", "target_hint", "enabled")
AnyActor = Actor | str | None


def _rule_values(rule: AlertRule | None) -> dict | None:
    values = audit_values(rule, RULE_FIELDS)
    if values is not None and rule is not None and rule.pk:
        values["channel_ids"] = sorted(rule.channels.values_list("pk", flat=True))
    return values


def duration_parse(text: str | int) -> int:
    """Seconds from `90`, `90s`, `5m`, `1h`, `2d`; ValidationError otherwise."""
    if isinstance(text, int):
        return text
    found = _DURATION.match(str(text))
    if not found:
        raise ValidationError(f"{text!r} is not a duration (e.g. 90s, 5m, 1h, 2d)")
    return int(found[1]) * _UNITS[(found[2] or "s").lower()]


def channel_spec_parse(text: str) -> tuple[str, str]:
    """`slack:URL`, `email:ADDRESS`, `webhook:URL` (and teams:, pagerduty:) -> (kind, target)."""
    kind, sep, target = text.partition(":")
    if not sep or kind not in AlertChannel.Kind.values or not target:
        raise ValidationError(f"{text!r}: a channel is KIND:TARGET with KIND one of "
                              f"{', '.join(AlertChannel.Kind.values)}")
    return kind, target


def _target_hint(kind: str, target: str) -> str:
    """What the pages may show of a target, which is itself a secret."""
    if kind == AlertChannel.Kind.EMAIL:
        return "@" + target.rpartition("@")[2]
    if kind == AlertChannel.Kind.PAGERDUTY and "://" not in target:
        return f"…{target[-4:]}"
    return urlsplit(target).hostname or ""


def _target_check(kind: str, target: str) -> str:
    from alerts.channels import channel_target_validate

    return channel_target_validate(kind=kind, target=target.strip())


@dataclass(frozen=True)
class CreatedChannel:
    channel: AlertChannel
    # A webhook's signing secret, shown once (as an API key is); "" for other kinds.
    secret: str


def alert_channel_create(*, organization: Organization, name: str, kind: str, target: str,
                         enabled: bool = True, actor: AnyActor = None) -> CreatedChannel:
    """Add a channel; its target is checked (a webhook to a private address is refused)
    and stored encrypted. A webhook gets a new signing secret."""
    name = name.strip()
    if not name:
        raise ValidationError("A channel needs a name")
    if kind not in AlertChannel.Kind.values:
        raise ValidationError(f"kind must be one of {', '.join(AlertChannel.Kind.values)}")
    target = _target_check(kind, target)
    secret = (SECRET_PREFIX + secrets.token_urlsafe(32)
              if kind == AlertChannel.Kind.WEBHOOK else "")
    try:
        with transaction.atomic():
            channel = AlertChannel.objects.create(
                organization=organization, name=name, kind=kind,
                target_encrypted=crypto.encrypt(target), target_hint=_target_hint(kind, target),
                secret_encrypted=crypto.encrypt(secret) if secret else "", enabled=enabled)
            audit_record(organization=organization, actor=actor, action="alert_channel.create",
                         target=channel, after=audit_values(channel, CHANNEL_FIELDS))
    except IntegrityError:
        raise ValidationError(f"A channel named {name!r} exists already") from None
    return CreatedChannel(channel, secret)


def alert_channel_update(*, channel: AlertChannel, name: str | None = None,
                         target: str | None = None, enabled: bool | None = None,
                         rotate_secret: bool = False, actor: AnyActor = None) -> CreatedChannel:
    """Change what is given; `rotate_secret` gives a webhook a new signing secret
    (returned, shown once)."""
    fields = ["updated_at"]
    before = audit_values(channel, CHANNEL_FIELDS)
    if name is not None:
        if not name.strip():
            raise ValidationError("A channel needs a name")
        channel.name = name.strip()
        fields.append("name")
    if target is not None:
        target = _target_check(channel.kind, target)
        channel.target_encrypted = crypto.encrypt(target)
        channel.target_hint = _target_hint(channel.kind, target)
        fields += ["target_encrypted", "target_hint"]
    if enabled is not None:
        channel.enabled = enabled
        fields.append("enabled")
    secret = ""
    if rotate_secret and channel.kind == AlertChannel.Kind.WEBHOOK:
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        channel.secret_encrypted = crypto.encrypt(secret)
        fields.append("secret_encrypted")
    try:
        with transaction.atomic():
            channel.save(update_fields=fields)
            after = audit_values(channel, CHANNEL_FIELDS)
            if "target_encrypted" in fields or secret:
                after |= {"target_changed": "target_encrypted" in fields,
                          "signing_secret_rotated": bool(secret)}
            audit_record(organization=channel.organization, actor=actor,
                         action="alert_channel.update", target=channel, before=before,
                         after=after)
    except IntegrityError:
        raise ValidationError(f"A channel named {channel.name!r} exists already") from None
    return CreatedChannel(channel, secret)


def alert_channel_delete(*, channel: AlertChannel, actor: AnyActor = None) -> None:
    """The history keeps the channel's name; its rules lose it."""
    with transaction.atomic():
        audit_record(organization=channel.organization, actor=actor,
                     action="alert_channel.delete", target=channel,
                     before=audit_values(channel, CHANNEL_FIELDS))
        channel.delete()


@dataclass(frozen=True)
class RuleSpec:
    """A rule's settings as the API, dashboard and command give them (validated by
    alert_rule_create / alert_rule_update)."""

    name: str
    metric: str
    threshold: Decimal | str | int | float
    comparison: str = AlertRule.Comparison.GT
    window_seconds: int = 300
    cooldown_seconds: int = 3600
    model: str = ""
    api_key: ApiKey | None = None
    provider: str = ""
    enabled: bool = True


def alert_rule_check(organization: Organization, spec: RuleSpec) -> dict:
    """The rule's fields, normalised; ValidationError by field otherwise."""
    problems: dict[str, str] = {}
    name = spec.name.strip()
    if not name or len(name) > 100:
        problems["name"] = "A rule needs a name of at most 100 characters"
    if spec.metric not in Metric.values:
        problems["metric"] = f"must be one of {', '.join(Metric.values)}"
    if spec.comparison not in AlertRule.Comparison.values:
        problems["comparison"] = f"must be one of {', '.join(AlertRule.Comparison.values)}"
    try:
        threshold = Decimal(str(spec.threshold))
        if not threshold.is_finite() or threshold.adjusted() >= 13:
            raise InvalidOperation
        threshold = threshold.quantize(Decimal("0.000001"))
    except (InvalidOperation, ValueError):
        problems["threshold"] = "must be a number"
        threshold = Decimal(0)
    if not MIN_WINDOW_SECONDS <= spec.window_seconds <= MAX_WINDOW_SECONDS:
        problems["window_seconds"] = (f"must be {MIN_WINDOW_SECONDS} s to "
                                      f"{MAX_WINDOW_SECONDS // 86400} days")
    if not 0 <= spec.cooldown_seconds <= MAX_COOLDOWN_SECONDS:
        problems["cooldown_seconds"] = f"must be 0 to {MAX_COOLDOWN_SECONDS // 86400} days"
    if spec.api_key is not None and spec.api_key.organization_id != organization.pk:
        problems["api_key"] = "No such API key"
    if problems:
        raise ValidationError(problems)
    return {"name": name, "metric": spec.metric, "comparison": spec.comparison,
            "threshold": threshold, "window_seconds": spec.window_seconds,
            "cooldown_seconds": spec.cooldown_seconds, "model": spec.model.strip(),
            "api_key": spec.api_key, "provider": spec.provider.strip(),
            "enabled": spec.enabled}


def _channels_of(organization: Organization, channels: Iterable[AlertChannel]) -> list:
    channels = list(channels)
    if any(channel.organization_id != organization.pk for channel in channels):
        raise ValidationError({"channels": "No such channel"})
    return channels


def alert_rule_create(*, organization: Organization, spec: RuleSpec,
                      channels: Sequence[AlertChannel] = (), actor: AnyActor = None) -> AlertRule:
    """Add a rule (state ok: it fires at the first evaluation that finds it true)."""
    values = alert_rule_check(organization, spec)
    channels = _channels_of(organization, channels)
    try:
        with transaction.atomic():
            rule = AlertRule.objects.create(organization=organization, **values)
            rule.channels.set(channels)
            audit_record(organization=organization, actor=actor, action="alert_rule.create",
                         target=rule, after=_rule_values(rule))
    except IntegrityError:
        raise ValidationError({"name": f"A rule named {values['name']!r} exists already"}) \
            from None
    return rule


def alert_rule_update(*, rule: AlertRule, spec: RuleSpec,
                      channels: Sequence[AlertChannel] | None = None,
                      actor: AnyActor = None) -> AlertRule:
    """Replace the rule's settings (and channels, if given). Its state stays: the next
    evaluation resolves it if the new condition no longer holds."""
    values = alert_rule_check(rule.organization, spec)
    if channels is not None:
        channels = _channels_of(rule.organization, channels)
    before = _rule_values(rule)
    for name, value in values.items():
        setattr(rule, name, value)
    try:
        with transaction.atomic():
            rule.save(update_fields=[*values, "updated_at"])
            if not rule.enabled and rule.state != AlertRule.State.OK:
                # Nothing evaluates a disabled rule: it is not left "firing" forever. The
                # seq bump makes a tick that read it before this lose its transition.
                AlertRule.objects.filter(pk=rule.pk).update(
                    state=AlertRule.State.OK, state_since=timezone.now(), seq=F("seq") + 1)
                rule.refresh_from_db(fields=["state", "state_since", "seq"])
            if channels is not None:
                rule.channels.set(channels)
            audit_record(organization=rule.organization, actor=actor,
                         action="alert_rule.update", target=rule, before=before,
                         after=_rule_values(rule))
    except IntegrityError:
        raise ValidationError({"name": f"A rule named {values['name']!r} exists already"}) \
            from None
    return rule


def alert_rule_delete(*, rule: AlertRule, actor: AnyActor = None) -> None:
    """The history keeps the rule's name."""
    with transaction.atomic():
        audit_record(organization=rule.organization, actor=actor, action="alert_rule.delete",
                     target=rule, before=_rule_values(rule))
        rule.delete()


def alerts_tick() -> TickResult:
    """What beat runs every minute: every enabled rule, once."""
    return alerts_evaluate()


def budget_usage_evaluate(*, events: Sequence[BudgetUsageEvent]) -> int:
    """Evaluate the budget rules of the organizations whose budgets the request path
    reported moving, with each budget's reported spend as a floor (its request's record
    may not have landed yet). Returns the transitions taken."""
    floors: dict[int, tuple[date, Decimal]] = {}
    for event in events:
        floor = (event.period_start, Decimal(event.spend_usd))
        floors[event.budget_id] = max(floors.get(event.budget_id, floor), floor)
    if not events:
        return 0
    result = alerts_evaluate(org_ids={event.org_id for event in events},
                             metric=Metric.BUDGET_USED_PCT, budget_floors=floors)
    return len(result.transitions)
