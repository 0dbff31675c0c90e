from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from alerts.models import AlertChannel, AlertRule
from alerts.selectors import alert_channel_target, alert_channels_for_org
from alerts.services import (
    RuleSpec,
    alert_channel_create,
    alert_rule_create,
    channel_spec_parse,
    duration_parse,
)
from organizations.errors import ApiKeyNotFound, OrganizationNotFound
from organizations.models import Organization
from organizations.selectors import organization_get_by_slug
from organizations.services import Actor
from ratelimit.selectors import api_key_by_prefix

ACTOR = Actor(label="manage.py add_alert_rule")


def _channel(organization: Organization, kind: str, target: str,
             out) -> AlertChannel:
    """The organization's channel of this kind and target, made if it has none."""
    for channel in alert_channels_for_org(organization=organization).filter(kind=kind):
        if alert_channel_target(channel=channel) == target:
            return channel
    taken = set(alert_channels_for_org(organization=organization)
                .values_list("name", flat=True))
    base = f"{kind} {target.rpartition('@')[2] if kind == 'email' else ''}".strip()
    name, n = base, 2
    while name in taken:
        name, n = f"{base} {n}", n + 1
    created = alert_channel_create(organization=organization, name=name[:100], kind=kind,
                                   target=target, actor=ACTOR)
    if created.secret:
        out.write(f"channel {created.channel.name!r}: signing secret {created.secret} "
                  f"(shown once)")
    return created.channel


class Command(BaseCommand):
    help = ("Add an alert rule to an organization, notifying the channels given "
            "(made when the organization has no channel of that kind and target).")

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--metric", required=True, choices=AlertRule.Metric.values)
        parser.add_argument("--threshold", required=True)
        parser.add_argument("--comparison", default="gt",
                            choices=AlertRule.Comparison.values)
        parser.add_argument("--window", default="5m", help="e.g. 90s, 5m, 1h, 1d (5m)")
        parser.add_argument("--cooldown", default="1h",
                            help="re-notify a firing rule this often (1h)")
        parser.add_argument("--name", help="the rule's name (default: from the metric)")
        parser.add_argument("--channel", action="append", default=[],
                            help="slack:URL, email:ADDRESS, webhook:URL, teams:URL, "
                                 "pagerduty:ROUTING_KEY (repeatable)")
        parser.add_argument("--model", default="", help="only requests for this model")
        parser.add_argument("--key", help="only this API key's requests (its prefix)")
        parser.add_argument("--provider", default="", help="only this provider (its name)")
        parser.add_argument("--disabled", action="store_true")

    def handle(self, *args, org: str, metric: str, threshold: str, comparison: str,
               window: str, cooldown: str, name: str | None, channel: list[str],
               model: str, key: str | None, provider: str, disabled: bool, **options):
        try:
            organization = organization_get_by_slug(slug=org)
            api_key = api_key_by_prefix(organization=organization, prefix=key) if key else None
            specs = [channel_spec_parse(text) for text in channel]
            label = dict(AlertRule.Comparison.choices)[comparison]
            spec = RuleSpec(name=name or f"{metric} {label} {threshold}", metric=metric,
                            threshold=threshold, comparison=comparison,
                            window_seconds=duration_parse(window),
                            cooldown_seconds=duration_parse(cooldown), model=model,
                            api_key=api_key, provider=provider, enabled=not disabled)
            channels = [_channel(organization, kind, target, self.stdout)
                        for kind, target in specs]
            rule = alert_rule_create(organization=organization, spec=spec, channels=channels,
                                     actor=ACTOR)
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        except ApiKeyNotFound as exc:
            raise CommandError(f"No API key {key!r} in {org!r}") from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"rule {rule.pk}: {rule.name}")
