"""The Alerts page: an organization's rules (their state and the value they last read),
its channels, and the history of every transition and delivery, filterable. Every
member sees it; owners and admins add, change and remove rules and channels and send
test notifications (through alerts.services, audited as themselves)."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from alerts.models import AlertChannel, AlertEvent, AlertRule
from alerts.selectors import alert_channels_for_org, alert_events_for_org, alert_rules_for_org
from alerts.services import (
    RuleSpec,
    alert_channel_create,
    alert_channel_delete,
    alert_rule_create,
    alert_rule_delete,
    alert_rule_update,
    duration_parse,
)
from dashboard.access import (
    alert_channel_for_member,
    alert_rule_for_member,
    organization_for_member,
)
from dashboard.limits import _key_field
from dashboard.views import _render
from organizations.models import Organization
from organizations.services import Actor

EVENTS_SHOWN = 100


class _Duration(forms.CharField):
    def to_python(self, value):
        value = super().to_python(value)
        try:
            return duration_parse(value)
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages[0]) from None


def _seconds_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class RuleForm(forms.Form):
    name = forms.CharField(max_length=100)
    metric = forms.ChoiceField(choices=AlertRule.Metric.choices)
    comparison = forms.ChoiceField(choices=AlertRule.Comparison.choices)
    threshold = forms.DecimalField(max_digits=20, decimal_places=6)
    window = _Duration(initial="5m", help_text="e.g. 5m, 1h, 1d")
    cooldown = _Duration(initial="1h", help_text="Re-notify a firing rule this often.")
    model = forms.CharField(max_length=200, required=False,
                            help_text="Only requests for this model; empty for all.")
    provider = forms.CharField(max_length=64, required=False,
                               help_text="A provider's name (for provider failing).")
    channels = forms.ModelMultipleChoiceField(queryset=AlertChannel.objects.none(),
                                              required=False,
                                              widget=forms.CheckboxSelectMultiple)
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args, organization: Organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["channels"].queryset = alert_channels_for_org(organization=organization)
        key = _key_field(organization)
        key.label, key.empty_label = "API key", "Every key"
        self.fields = {**{k: v for k, v in self.fields.items() if k != "enabled"},
                       "api_key": key, "enabled": self.fields["enabled"]}

    @classmethod
    def of_rule(cls, rule: AlertRule) -> "RuleForm":
        return cls(organization=rule.organization, initial={
            "name": rule.name, "metric": rule.metric, "comparison": rule.comparison,
            "threshold": rule.threshold.normalize(),
            "window": _seconds_text(rule.window_seconds),
            "cooldown": _seconds_text(rule.cooldown_seconds), "model": rule.model,
            "provider": rule.provider, "api_key": rule.api_key,
            "channels": list(rule.channels.all()), "enabled": rule.enabled})

    def spec(self) -> RuleSpec:
        data = self.cleaned_data
        return RuleSpec(name=data["name"], metric=data["metric"],
                        comparison=data["comparison"], threshold=data["threshold"],
                        window_seconds=data["window"], cooldown_seconds=data["cooldown"],
                        model=data["model"], api_key=data["api_key"],
                        provider=data["provider"], enabled=data["enabled"])


class ChannelForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=AlertChannel.Kind.choices)
    target = forms.CharField(max_length=2000, widget=forms.PasswordInput,
                             help_text="The webhook URL, the email address, or PagerDuty's "
                                       "routing key. Never shown again.")


class HistoryFilter(forms.Form):
    rule = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    transition = forms.ChoiceField(choices=[("", "Any"), *AlertEvent.Transition.choices],
                                   required=False)
    status = forms.ChoiceField(choices=[("", "Any"), *AlertEvent.Status.choices],
                               required=False)

    def __init__(self, *args, rules, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rule"].choices = [("", "Any"), *((r.pk, r.name) for r in rules)]


def _page(request: HttpRequest, organization: Organization, *, rule_form=None,
          channel_form=None, status: int = 200) -> HttpResponse:
    rules = list(alert_rules_for_org(organization=organization))
    history = HistoryFilter(request.GET, rules=rules)
    filters = history.cleaned_data if history.is_valid() else {}
    events = alert_events_for_org(organization=organization, rule_id=filters.get("rule"),
                                  transition=filters.get("transition", ""),
                                  status=filters.get("status", ""))
    return _render(request, organization, "dashboard/alerts.html", "alerts", {
        "rules": rules,
        "channels": alert_channels_for_org(organization=organization),
        "events": events[:EVENTS_SHOWN],
        "history": history,
        "rule_form": rule_form or RuleForm(organization=organization),
        "channel_form": channel_form or ChannelForm(),
    }, status=status)


@login_required
@require_GET
def alerts(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, organization_for_member(request.user, slug))


@login_required
@require_POST
def rule_add(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    form = RuleForm(request.POST, organization=organization)
    if form.is_valid():
        try:
            alert_rule_create(organization=organization, spec=form.spec(),
                              channels=form.cleaned_data["channels"],
                              actor=Actor.of_user(request.user))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Added the rule. It is evaluated every minute.")
            return redirect("dashboard:alerts", slug=organization.slug)
    return _page(request, organization, rule_form=form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, slug: str, rule_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug,
                                           manage=request.method == "POST")
    rule = alert_rule_for_member(organization, rule_id)
    form = RuleForm.of_rule(rule)
    status = 200
    if request.method == "POST":
        form = RuleForm(request.POST, organization=organization)
        if form.is_valid():
            try:
                alert_rule_update(rule=rule, spec=form.spec(),
                                  channels=form.cleaned_data["channels"],
                                  actor=Actor.of_user(request.user))
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, "Saved the rule.")
                return redirect("dashboard:alerts", slug=organization.slug)
        status = 400
    return _render(request, organization, "dashboard/alert_rule.html", "alerts",
                   {"rule": rule, "form": form}, status=status)


@login_required
@require_POST
def rule_remove(request: HttpRequest, slug: str, rule_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    rule = alert_rule_for_member(organization, rule_id)
    alert_rule_delete(rule=rule, actor=Actor.of_user(request.user))
    messages.success(request, f"Removed the rule {rule.name!r}; its history stays.")
    return redirect("dashboard:alerts", slug=organization.slug)


@login_required
@require_POST
def channel_add(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    form = ChannelForm(request.POST)
    if form.is_valid():
        try:
            created = alert_channel_create(organization=organization,
                                           actor=Actor.of_user(request.user),
                                           **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            text = f"Added the channel {created.channel.name!r}."
            if created.secret:
                text += f" Its signing secret, shown only now: {created.secret}"
            messages.success(request, text)
            return redirect("dashboard:alerts", slug=organization.slug)
    return _page(request, organization, channel_form=form, status=400)


@login_required
@require_POST
def channel_remove(request: HttpRequest, slug: str, channel_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    channel = alert_channel_for_member(organization, channel_id)
    alert_channel_delete(channel=channel, actor=Actor.of_user(request.user))
    messages.success(request, f"Removed the channel {channel.name!r}.")
    return redirect("dashboard:alerts", slug=organization.slug)


@login_required
@require_POST
def channel_test(request: HttpRequest, slug: str, channel_id: int) -> HttpResponse:
    from alerts.delivery import alert_test_send

    organization = organization_for_member(request.user, slug, manage=True)
    channel = alert_channel_for_member(organization, channel_id)
    event = alert_test_send(channel=channel)
    if event.status == AlertEvent.Status.DELIVERED:
        messages.success(request, f"Test notification delivered to {channel.name!r}.")
    else:
        messages.error(request, f"Test notification to {channel.name!r} failed: "
                                f"{event.response[:200]}")
    return redirect("dashboard:alerts", slug=organization.slug)
