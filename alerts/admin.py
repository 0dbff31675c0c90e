"""Alerts in Django admin: rules and channels edited through alerts.services (the same
checks as everywhere: a channel's target validated and encrypted, write-only), the
history read-only."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from alerts.models import AlertChannel, AlertEvent, AlertRule
from alerts.services import (
    RuleSpec,
    alert_channel_create,
    alert_channel_update,
    alert_rule_check,
)
from organizations.services import Actor


class AlertChannelForm(forms.ModelForm):
    target = forms.CharField(required=False, widget=forms.PasswordInput, help_text=(
        "The webhook URL, email address or PagerDuty routing key; write-only (leave "
        "empty to keep it)."))

    class Meta:
        model = AlertChannel
        fields = ["organization", "name", "kind", "enabled"]

    def clean(self):
        data = super().clean()
        if not self.instance.pk and not data.get("target"):
            raise ValidationError({"target": "A new channel needs a target"})
        return data


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    form = AlertChannelForm
    list_display = ["name", "organization", "kind", "target_hint", "enabled", "created_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "organization__slug"]

    def get_readonly_fields(self, request, obj=None):
        return ["organization", "kind", "target_hint"] if obj else ["target_hint"]

    def save_model(self, request, obj: AlertChannel, form, change: bool) -> None:
        data, actor = form.cleaned_data, Actor.of_user(request.user)
        try:
            if change:
                alert_channel_update(channel=obj, name=data["name"], enabled=data["enabled"],
                                     target=data.get("target") or None, actor=actor)
            else:
                created = alert_channel_create(
                    organization=data["organization"], name=data["name"], kind=data["kind"],
                    target=data["target"], enabled=data["enabled"], actor=actor)
                obj.pk = created.channel.pk
                if created.secret:
                    self.message_user(request, f"Signing secret (shown once): {created.secret}")
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), level="error")


class AlertRuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = ["organization", "name", "metric", "comparison", "threshold",
                  "window_seconds", "cooldown_seconds", "model", "api_key", "provider",
                  "channels", "enabled"]

    def clean(self):
        # The service's checks (window, threshold, the key's and channels' organization).
        data = super().clean()
        organization = data.get("organization")
        if organization is not None and not self.errors:
            alert_rule_check(organization, RuleSpec(
                name=data["name"], metric=data["metric"], threshold=data["threshold"],
                comparison=data["comparison"], window_seconds=data["window_seconds"],
                cooldown_seconds=data["cooldown_seconds"], model=data["model"],
                api_key=data.get("api_key"), provider=data["provider"],
                enabled=data["enabled"]))
            if any(c.organization_id != organization.pk for c in data.get("channels", [])):
                raise ValidationError({"channels": "Channels of this organization only"})
        return data


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ["name", "organization", "metric", "comparison", "threshold",
                    "window_seconds", "state", "last_value", "enabled", "is_default"]
    list_filter = ["metric", "state", "enabled", "is_default"]
    search_fields = ["name", "organization__slug"]
    filter_horizontal = ["channels"]
    readonly_fields = ["state", "state_since", "last_value", "last_evaluated_at",
                       "last_notified_at", "seq", "is_default", "created_at", "updated_at"]
    raw_id_fields = ["api_key"]


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "organization", "rule_name", "transition", "seq", "value",
                    "threshold", "channel_name", "status", "attempts"]
    list_filter = ["transition", "status"]
    search_fields = ["rule_name", "organization__slug"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
