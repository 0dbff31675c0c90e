"""The management API for alerts (/api/alerts/...): rules, channels, the history, and
"send a test notification". One APIView per resource, one method per operation; who
may: organizations.api.ManagementApi (an admin-scoped key, or a member; writing takes
an owner or admin). Targets and secrets are write-only: a channel shows its
`target_hint`, and a webhook's signing secret only in the answer that made it."""

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from alerts.errors import AlertChannelNotFound, AlertRuleNotFound
from alerts.models import AlertChannel, AlertEvent, AlertRule
from alerts.selectors import (
    alert_channel_get_for_org,
    alert_channels_for_org,
    alert_events_for_org,
    alert_rule_get_for_org,
    alert_rules_for_org,
)
from alerts.services import (
    RuleSpec,
    alert_channel_create,
    alert_channel_delete,
    alert_channel_update,
    alert_rule_create,
    alert_rule_delete,
    alert_rule_update,
)
from organizations.api import ORG_PARAMETER, ManagementApi, choices_message
from organizations.errors import ApiKeyNotFound
from organizations.services import Actor
from ratelimit.selectors import api_key_by_prefix

EVENTS_SHOWN = 200


class _Api(ManagementApi):
    domain_errors = {
        **ManagementApi.domain_errors,
        AlertRuleNotFound: (404, "not_found"),
        AlertChannelNotFound: (404, "not_found"),
    }


class ChannelOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AlertChannel"

    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    target_hint = serializers.CharField(help_text="What may be shown of the target "
                                                  "(a host, an email domain)")
    enabled = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class CreatedChannelSerializer(ChannelOutputSerializer):
    class Meta:
        ref_name = "AlertChannelCreated"

    signing_secret = serializers.CharField(
        allow_blank=True, help_text="A webhook's HMAC-SHA256 secret: shown only here")


def _created(created) -> dict:
    data = dict(ChannelOutputSerializer(created.channel).data)
    data["signing_secret"] = created.secret
    return data


class ChannelInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AlertChannelInput"

    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=AlertChannel.Kind.values, error_messages={
        "invalid_choice": choices_message(AlertChannel.Kind.values)})
    target = serializers.CharField(max_length=2000, help_text="The webhook URL, the email "
                                   "address, or PagerDuty's routing key; write-only")
    enabled = serializers.BooleanField(default=True)


class ChannelPatchSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AlertChannelPatch"

    name = serializers.CharField(max_length=100, required=False)
    target = serializers.CharField(max_length=2000, required=False)
    enabled = serializers.BooleanField(required=False)
    rotate_secret = serializers.BooleanField(default=False, help_text="A webhook: a new "
                                             "signing secret, in this answer only")


class ChannelsApi(_Api):
    @extend_schema(operation_id="alert_channels_list", parameters=[ORG_PARAMETER],
                   responses=ChannelOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        channels = alert_channels_for_org(organization=self.organization)
        return Response(ChannelOutputSerializer(channels, many=True).data)

    @extend_schema(operation_id="alert_channels_create", parameters=[ORG_PARAMETER],
                   request=ChannelInputSerializer, responses={201: CreatedChannelSerializer})
    def post(self, request: Request) -> Response:
        params = ChannelInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        created = alert_channel_create(organization=self.organization,
                                       actor=Actor.of_request(request), **params.validated_data)
        return Response(_created(created), status=201, headers={"Cache-Control": "no-store"})


class ChannelApi(_Api):
    @extend_schema(operation_id="alert_channels_retrieve", parameters=[ORG_PARAMETER],
                   responses=ChannelOutputSerializer)
    def get(self, request: Request, channel_id: int) -> Response:
        channel = alert_channel_get_for_org(organization=self.organization,
                                            channel_id=channel_id)
        return Response(ChannelOutputSerializer(channel).data)

    @extend_schema(operation_id="alert_channels_update", parameters=[ORG_PARAMETER],
                   request=ChannelPatchSerializer, responses=CreatedChannelSerializer)
    def patch(self, request: Request, channel_id: int) -> Response:
        channel = alert_channel_get_for_org(organization=self.organization,
                                            channel_id=channel_id)
        params = ChannelPatchSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        updated = alert_channel_update(channel=channel, actor=Actor.of_request(request),
                                       **params.validated_data)
        return Response(_created(updated), headers={"Cache-Control": "no-store"})

    @extend_schema(operation_id="alert_channels_delete", parameters=[ORG_PARAMETER],
                   responses={204: None})
    def delete(self, request: Request, channel_id: int) -> Response:
        channel = alert_channel_get_for_org(organization=self.organization,
                                            channel_id=channel_id)
        alert_channel_delete(channel=channel, actor=Actor.of_request(request))
        return Response(status=204)


class EventOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AlertEvent"

    id = serializers.IntegerField()
    rule = serializers.IntegerField(source="rule_id", allow_null=True)
    rule_name = serializers.CharField()
    metric = serializers.CharField()
    comparison = serializers.CharField()
    transition = serializers.CharField()
    seq = serializers.IntegerField()
    value = serializers.DecimalField(max_digits=24, decimal_places=6, allow_null=True,
                                     help_text="The metric's value that made the transition")
    threshold = serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True)
    channel = serializers.IntegerField(source="channel_id", allow_null=True)
    channel_name = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    response = serializers.CharField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class TestApi(_Api):
    @extend_schema(operation_id="alert_channels_test", parameters=[ORG_PARAMETER],
                   request=None, responses=EventOutputSerializer,
                   description="Sends a test notification now and answers how it went "
                               "(also kept in the history as a `test` event).")
    def post(self, request: Request, channel_id: int) -> Response:
        from alerts.delivery import alert_test_send

        channel = alert_channel_get_for_org(organization=self.organization,
                                            channel_id=channel_id)
        return Response(EventOutputSerializer(alert_test_send(channel=channel)).data)


class RuleOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AlertRule"

    id = serializers.IntegerField()
    name = serializers.CharField()
    metric = serializers.CharField()
    comparison = serializers.CharField()
    threshold = serializers.DecimalField(max_digits=20, decimal_places=6)
    window_seconds = serializers.IntegerField()
    cooldown_seconds = serializers.IntegerField()
    model = serializers.CharField()
    api_key = serializers.CharField(source="api_key.prefix", allow_null=True, default=None)
    provider = serializers.CharField()
    channels = serializers.SerializerMethodField()
    enabled = serializers.BooleanField()
    is_default = serializers.BooleanField()
    state = serializers.CharField()
    state_since = serializers.DateTimeField(allow_null=True)
    last_value = serializers.DecimalField(max_digits=24, decimal_places=6, allow_null=True)
    last_evaluated_at = serializers.DateTimeField(allow_null=True)
    last_notified_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_channels(self, rule: AlertRule) -> list[int]:
        return sorted(channel.pk for channel in rule.channels.all())


class RuleInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AlertRuleInput"

    name = serializers.CharField(max_length=100)
    metric = serializers.ChoiceField(choices=AlertRule.Metric.values, error_messages={
        "invalid_choice": choices_message(AlertRule.Metric.values)})
    comparison = serializers.ChoiceField(
        choices=AlertRule.Comparison.values, default="gt",
        error_messages={"invalid_choice": choices_message(AlertRule.Comparison.values)})
    threshold = serializers.DecimalField(max_digits=20, decimal_places=6)
    window_seconds = serializers.IntegerField(default=300, min_value=60)
    cooldown_seconds = serializers.IntegerField(default=3600, min_value=0)
    model = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    api_key = serializers.CharField(required=False, allow_null=True, default=None,
                                    help_text="A key's prefix: only its requests")
    provider = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                     default="")
    channels = serializers.ListField(child=serializers.IntegerField(), default=list,
                                     help_text="Channel ids of the organization")
    enabled = serializers.BooleanField(default=True)


def _rule_arguments(view: _Api, request: Request) -> tuple[RuleSpec, list[AlertChannel]]:
    params = RuleInputSerializer(data=request.data)
    params.is_valid(raise_exception=True)
    data = dict(params.validated_data)
    channel_ids = data.pop("channels")
    prefix = data.pop("api_key")
    try:
        api_key = (api_key_by_prefix(organization=view.organization, prefix=prefix)
                   if prefix else None)
    except ApiKeyNotFound:
        raise serializers.ValidationError({"api_key": ["No such API key"]}) from None
    channels = []
    for index, channel_id in enumerate(channel_ids):
        try:
            channels.append(alert_channel_get_for_org(organization=view.organization,
                                                      channel_id=channel_id))
        except AlertChannelNotFound:
            raise serializers.ValidationError(
                {"channels": {index: ["No such channel"]}}) from None
    return RuleSpec(api_key=api_key, **data), channels


def _service_errors(call):
    """A service's field errors as the serializer's, so `param` names the field."""
    try:
        return call()
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            raise serializers.ValidationError(
                {field: [str(m) for e in errors for m in e.messages]
                 for field, errors in exc.error_dict.items()}) from None
        raise


class RulesApi(_Api):
    @extend_schema(operation_id="alert_rules_list", parameters=[ORG_PARAMETER],
                   responses=RuleOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        rules = alert_rules_for_org(organization=self.organization)
        return Response(RuleOutputSerializer(rules, many=True).data)

    @extend_schema(operation_id="alert_rules_create", parameters=[ORG_PARAMETER],
                   request=RuleInputSerializer, responses={201: RuleOutputSerializer})
    def post(self, request: Request) -> Response:
        spec, channels = _rule_arguments(self, request)
        rule = _service_errors(lambda: alert_rule_create(
            organization=self.organization, spec=spec, channels=channels,
            actor=Actor.of_request(request)))
        return Response(RuleOutputSerializer(rule).data, status=201)


class RuleApi(_Api):
    @extend_schema(operation_id="alert_rules_retrieve", parameters=[ORG_PARAMETER],
                   responses=RuleOutputSerializer)
    def get(self, request: Request, rule_id: int) -> Response:
        rule = alert_rule_get_for_org(organization=self.organization, rule_id=rule_id)
        return Response(RuleOutputSerializer(rule).data)

    @extend_schema(operation_id="alert_rules_replace", parameters=[ORG_PARAMETER],
                   request=RuleInputSerializer, responses=RuleOutputSerializer)
    def put(self, request: Request, rule_id: int) -> Response:
        rule = alert_rule_get_for_org(organization=self.organization, rule_id=rule_id)
        spec, channels = _rule_arguments(self, request)
        rule = _service_errors(lambda: alert_rule_update(
            rule=rule, spec=spec, channels=channels, actor=Actor.of_request(request)))
        return Response(RuleOutputSerializer(rule).data)

    @extend_schema(operation_id="alert_rules_delete", parameters=[ORG_PARAMETER],
                   responses={204: None})
    def delete(self, request: Request, rule_id: int) -> Response:
        rule = alert_rule_get_for_org(organization=self.organization, rule_id=rule_id)
        alert_rule_delete(rule=rule, actor=Actor.of_request(request))
        return Response(status=204)


class EventsInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AlertEventsInput"

    rule = serializers.IntegerField(required=False)
    channel = serializers.IntegerField(required=False)
    transition = serializers.ChoiceField(choices=AlertEvent.Transition.values, required=False)
    status = serializers.ChoiceField(choices=AlertEvent.Status.values, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class EventsApi(_Api):
    @extend_schema(operation_id="alert_events_list",
                   parameters=[ORG_PARAMETER, EventsInputSerializer],
                   responses=EventOutputSerializer(many=True),
                   description=f"The history, newest first (at most {EVENTS_SHOWN}).")
    def get(self, request: Request) -> Response:
        params = EventsInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        events = alert_events_for_org(
            organization=self.organization, rule_id=data.get("rule"),
            channel_id=data.get("channel"), transition=data.get("transition", ""),
            status=data.get("status", ""), since=data.get("since"), until=data.get("until"))
        return Response(EventOutputSerializer(events[:EVENTS_SHOWN], many=True).data)
