"""The management API for an organization's model routes (/api/routes): one APIView per
resource, one method per operation. Who may: organizations.api.ManagementApi.

A target names a provider of the organization by its name; a target without a provider
is an alias, its `upstream_model` the name of another route of the organization.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from organizations.api import ORG_PARAMETER, ManagementApi, choices_message
from organizations.errors import ProviderNotFound
from organizations.models import Organization
from organizations.selectors import provider_get_by_name
from organizations.services import Actor
from routing.errors import RouteInUse, RouteNotFound
from routing.models import ModelRoute
from routing.selectors import route_get_for_org, routes_for_org
from routing.services import TargetSpec, route_delete, route_set, route_update
from routing.table import RETRY_ON, STRATEGIES


class RouteOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Route"

    class TargetSerializer(serializers.Serializer):
        class Meta:
            ref_name = "RouteTarget"

        provider = serializers.CharField(source="provider.name", allow_null=True,
                                         help_text="null for an alias")
        upstream_model = serializers.CharField(
            help_text="The model the provider is asked for; for an alias, the route it names")
        weight = serializers.IntegerField()
        priority = serializers.IntegerField(help_text="lower first")
        enabled = serializers.BooleanField()

    id = serializers.IntegerField()
    name = serializers.CharField()
    strategy = serializers.CharField()
    retry_on = serializers.ListField(child=serializers.CharField())
    targets = TargetSerializer(many=True, source="targets.all")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RouteInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "RouteInput"

    class TargetSerializer(serializers.Serializer):
        class Meta:
            ref_name = "RouteTargetInput"

        provider = serializers.CharField(
            required=False, allow_null=True, default=None,
            help_text="A provider's name; leave out (or null) for an alias")
        upstream_model = serializers.CharField(max_length=200)
        weight = serializers.IntegerField(default=1)
        priority = serializers.IntegerField(
            required=False, help_text="Default: the target's place in the list (from 0)")
        enabled = serializers.BooleanField(default=True)

    name = serializers.CharField(max_length=200,
                                 help_text="The model name clients ask for, or an alias")
    strategy = serializers.ChoiceField(
        choices=STRATEGIES, default="priority",
        error_messages={"invalid_choice": choices_message(STRATEGIES)})
    retry_on = serializers.ListField(
        child=serializers.ChoiceField(
            choices=sorted(RETRY_ON),
            error_messages={"invalid_choice": choices_message(sorted(RETRY_ON))}),
        required=False, help_text="What moves a request to the next target; default all")
    targets = TargetSerializer(many=True)


def _route_arguments(organization: Organization, data: dict) -> dict:
    """The validated input as route_set's arguments, provider names looked up in the
    organization (a name of another organization's provider is unknown here)."""
    targets = []
    for index, target in enumerate(data["targets"]):
        name = target.pop("provider")
        provider = None
        if name is not None:
            try:
                provider = provider_get_by_name(organization=organization, name=name)
            except ProviderNotFound as exc:
                raise serializers.ValidationError(
                    {"targets": {index: {"provider": [str(exc)]}}}) from None
        targets.append(TargetSpec(provider=provider, **target))
    return {"name": data["name"], "strategy": data["strategy"],
            "retry_on": data.get("retry_on"), "targets": targets}


class RoutingApi(ManagementApi):
    domain_errors = {
        **ManagementApi.domain_errors,
        RouteNotFound: (404, "not_found"),
        RouteInUse: (409, "route_in_use"),
    }


class RoutesApi(RoutingApi):
    @extend_schema(operation_id="routes_list", parameters=[ORG_PARAMETER],
                   responses=RouteOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        routes = routes_for_org(organization=self.organization)
        return Response(RouteOutputSerializer(routes, many=True).data)

    @extend_schema(operation_id="routes_set", parameters=[ORG_PARAMETER],
                   request=RouteInputSerializer,
                   responses={201: RouteOutputSerializer, 200: RouteOutputSerializer},
                   description="Creates the route `name` (201), or replaces its strategy, "
                               "retry_on and targets (200)")
    def post(self, request: Request) -> Response:
        params = RouteInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        route, created = route_set(organization=self.organization,
                                   actor=Actor.of_request(request),
                                   **_route_arguments(self.organization, params.validated_data))
        return _route_response(self.organization, route, status=201 if created else 200)


class RouteApi(RoutingApi):
    @extend_schema(operation_id="routes_retrieve", parameters=[ORG_PARAMETER],
                   responses=RouteOutputSerializer)
    def get(self, request: Request, route_id: int) -> Response:
        route = route_get_for_org(organization=self.organization, route_id=route_id)
        return Response(RouteOutputSerializer(route).data)

    @extend_schema(operation_id="routes_replace", parameters=[ORG_PARAMETER],
                   request=RouteInputSerializer, responses=RouteOutputSerializer)
    def put(self, request: Request, route_id: int) -> Response:
        route = route_get_for_org(organization=self.organization, route_id=route_id)
        params = RouteInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        route = route_update(route=route, actor=Actor.of_request(request),
                             **_route_arguments(self.organization, params.validated_data))
        return _route_response(self.organization, route)

    @extend_schema(operation_id="routes_destroy", parameters=[ORG_PARAMETER],
                   responses={204: OpenApiResponse(description="Deleted")})
    def delete(self, request: Request, route_id: int) -> Response:
        route = route_get_for_org(organization=self.organization, route_id=route_id)
        route_delete(route=route, actor=Actor.of_request(request))
        return Response(status=204)


def _route_response(organization: Organization, route: ModelRoute, *,
                    status: int = 200) -> Response:
    """The route as written, read back with its targets."""
    route = route_get_for_org(organization=organization, route_id=route.pk)
    return Response(RouteOutputSerializer(route).data, status=status)
