"""Reads of alert rules, channels and history, always through their organization."""

from datetime import datetime

from django.db.models import QuerySet

from alerts.errors import AlertChannelNotFound, AlertRuleNotFound
from alerts.models import AlertChannel, AlertEvent, AlertRule
from organizations import crypto
from organizations.models import Organization


def alert_rules_for_org(*, organization: Organization) -> QuerySet[AlertRule]:
    return (AlertRule.objects.filter(organization=organization).select_related("api_key")
            .prefetch_related("channels").order_by("name"))


def alert_rule_get_for_org(*, organization: Organization, rule_id: int) -> AlertRule:
    """Raises AlertRuleNotFound for anyone else's."""
    found = alert_rules_for_org(organization=organization).filter(pk=rule_id).first()
    if found is None:
        raise AlertRuleNotFound("No such alert rule")
    return found


def alert_channels_for_org(*, organization: Organization) -> QuerySet[AlertChannel]:
    return AlertChannel.objects.filter(organization=organization).order_by("name")


def alert_channel_get_for_org(*, organization: Organization, channel_id: int) -> AlertChannel:
    """Raises AlertChannelNotFound for anyone else's."""
    found = alert_channels_for_org(organization=organization).filter(pk=channel_id).first()
    if found is None:
        raise AlertChannelNotFound("No such alert channel")
    return found


def alert_channel_target(*, channel: AlertChannel) -> str:
    """The channel's URL or address, decrypted (for sending, never for showing)."""
    return crypto.decrypt(channel.target_encrypted)


def alert_channel_secret(*, channel: AlertChannel) -> str:
    return crypto.decrypt(channel.secret_encrypted) if channel.secret_encrypted else ""


def alert_events_for_org(*, organization: Organization, rule_id: int | None = None,
                         transition: str = "", status: str = "",
                         channel_id: int | None = None, since: datetime | None = None,
                         until: datetime | None = None) -> QuerySet[AlertEvent]:
    """The organization's alert history, newest first, narrowed by what is given."""
    events = AlertEvent.objects.filter(organization=organization)
    if rule_id is not None:
        events = events.filter(rule_id=rule_id)
    if transition:
        events = events.filter(transition=transition)
    if status:
        events = events.filter(status=status)
    if channel_id is not None:
        events = events.filter(channel_id=channel_id)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events.order_by("-created_at", "-pk")
