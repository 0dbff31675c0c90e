"""The management API for the organization's smart routing policy (/api/routing/policy).
Who may: organizations.api.ManagementApi (an admin-scoped key, or a member: members read,
owners and admins write)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from organizations.api import ORG_PARAMETER, ManagementApi, choices_message
from organizations.services import Actor
from routing.errors import RoutingPolicyInvalid, RoutingPolicyNotFound
from routing.models import RoutingPolicy
from routing.policies import routing_policy_set
from routing.selectors import routing_policy_get_for_org


class PolicyOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "RoutingPolicy"

    mode = serializers.CharField()
    simple_model = serializers.CharField(help_text="a model, or @ROUTE")
    standard_model = serializers.CharField()
    complex_model = serializers.CharField()
    simple_below = serializers.FloatField(help_text="scores below are simple")
    complex_from = serializers.FloatField(help_text="scores from here on are complex")
    apply_to = serializers.ListField(child=serializers.CharField(),
                                     help_text="models routed too (auto always is)")
    generation = serializers.IntegerField(
        help_text="bumped by every change; part of routed requests' cache keys")
    updated_at = serializers.DateTimeField()


class PolicyInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "RoutingPolicyInput"

    mode = serializers.ChoiceField(
        choices=RoutingPolicy.Mode.values, required=False,
        error_messages={"invalid_choice": choices_message(RoutingPolicy.Mode.values)})
    simple_model = serializers.CharField(max_length=201, required=False)
    standard_model = serializers.CharField(max_length=201, required=False)
    complex_model = serializers.CharField(max_length=201, required=False)
    simple_below = serializers.FloatField(required=False)
    complex_from = serializers.FloatField(required=False)
    apply_to = serializers.ListField(child=serializers.CharField(max_length=200),
                                     required=False)


class RoutingPolicyApi(ManagementApi):
    domain_errors = {
        **ManagementApi.domain_errors,
        RoutingPolicyNotFound: (404, "not_found"),
    }

    def handle_exception(self, exc):
        if isinstance(exc, RoutingPolicyInvalid):
            # Raised as DRF's, so the answer names the field like every other 400.
            exc = serializers.ValidationError({exc.param or "non_field_errors": [str(exc)]})
        return super().handle_exception(exc)

    @extend_schema(operation_id="routing_policy_retrieve", parameters=[ORG_PARAMETER],
                   responses=PolicyOutputSerializer)
    def get(self, request: Request) -> Response:
        policy = routing_policy_get_for_org(organization=self.organization)
        return Response(PolicyOutputSerializer(policy).data)

    @extend_schema(operation_id="routing_policy_set", parameters=[ORG_PARAMETER],
                   request=PolicyInputSerializer, responses=PolicyOutputSerializer,
                   description="Creates the policy (its three tier models required) or "
                               "changes the fields given; the others keep their values")
    def put(self, request: Request) -> Response:
        params = PolicyInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        policy, _ = routing_policy_set(organization=self.organization,
                                       actor=Actor.of_request(request),
                                       **params.validated_data)
        return Response(PolicyOutputSerializer(policy).data)

