"""The management API for an organization's providers and API keys (/api/providers,
/api/keys): one APIView per resource, one method per operation. Who may: ManagementApi.

Provider keys are write-only: no answer carries more of one than its last four
characters. A new API key's raw form is in the answer that creates it, and nowhere
after.
"""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from organizations.api import ORG_PARAMETER, ManagementApi, choices_message
from organizations.models import ApiKey, Provider
from organizations.selectors import (
    api_key_get_for_org,
    api_keys_for_org,
    audit_entries_for_org,
    member_can_manage,
    provider_get_for_org,
    providers_for_org,
)
from organizations.services import (
    Actor,
    api_key_create,
    api_key_revoke,
    provider_add,
    provider_delete,
    provider_update,
)

DELETED = OpenApiResponse(description="Deleted")


class ProviderOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Provider"

    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    base_url = serializers.CharField()
    api_version = serializers.CharField(help_text="Azure OpenAI's api-version; blank for others")
    api_key_last4 = serializers.CharField(help_text="The key itself is never shown")
    enabled = serializers.BooleanField()
    is_default = serializers.BooleanField(
        help_text="Receives every model that has no route of its own")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _provider_fields(*, partial: bool) -> dict[str, serializers.Field]:
    """The fields of a provider's create (`partial=False`) or update input."""

    def absent(default=None) -> dict:
        """What a field left out means: unchanged on update, else `default` (or required)."""
        if partial:
            return {"required": False}
        return {} if default is None else {"default": default}

    return {
        "name": serializers.CharField(max_length=64, **absent()),
        "kind": serializers.ChoiceField(
            choices=Provider.Kind.values, **absent(Provider.Kind.OPENAI),
            error_messages={"invalid_choice": choices_message(Provider.Kind.values)}),
        "base_url": serializers.CharField(max_length=500, **absent()),
        "api_key": serializers.CharField(
            write_only=True, allow_blank=partial, style={"input_type": "password"},
            **absent(), help_text="Write-only; encrypted at rest." + (
                " Leave out (or empty) to keep the stored key." if partial else "")),
        "api_version": serializers.CharField(max_length=40, allow_blank=True, **absent("")),
        "enabled": serializers.BooleanField(**absent(True)),
        "is_default": serializers.BooleanField(
            **absent(False),
            help_text="Make this the organization's default provider (the first provider "
                      "of an organization is its default anyway)"),
    }


class ProvidersApi(ManagementApi):
    CreateInputSerializer = type("ProviderCreateInput", (serializers.Serializer,),
                                 _provider_fields(partial=False))

    @extend_schema(operation_id="providers_list", parameters=[ORG_PARAMETER],
                   responses=ProviderOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        providers = providers_for_org(organization=self.organization)
        return Response(ProviderOutputSerializer(providers, many=True).data)

    @extend_schema(operation_id="providers_create", parameters=[ORG_PARAMETER],
                   request=CreateInputSerializer, responses={201: ProviderOutputSerializer})
    def post(self, request: Request) -> Response:
        params = self.CreateInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        provider = provider_add(organization=self.organization, actor=Actor.of_request(request),
                                **params.validated_data)
        return Response(ProviderOutputSerializer(provider).data, status=201)


class ProviderApi(ManagementApi):
    UpdateInputSerializer = type("ProviderUpdateInput", (serializers.Serializer,),
                                 _provider_fields(partial=True))

    @extend_schema(operation_id="providers_retrieve", parameters=[ORG_PARAMETER],
                   responses=ProviderOutputSerializer)
    def get(self, request: Request, provider_id: int) -> Response:
        provider = provider_get_for_org(organization=self.organization,
                                        provider_id=provider_id)
        return Response(ProviderOutputSerializer(provider).data)

    @extend_schema(operation_id="providers_update", parameters=[ORG_PARAMETER],
                   request=UpdateInputSerializer, responses=ProviderOutputSerializer)
    def patch(self, request: Request, provider_id: int) -> Response:
        provider = provider_get_for_org(organization=self.organization,
                                        provider_id=provider_id)
        params = self.UpdateInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        provider = provider_update(provider=provider, actor=Actor.of_request(request),
                                   **params.validated_data)
        return Response(ProviderOutputSerializer(provider).data)

    @extend_schema(operation_id="providers_destroy", parameters=[ORG_PARAMETER],
                   responses={204: DELETED})
    def delete(self, request: Request, provider_id: int) -> Response:
        provider = provider_get_for_org(organization=self.organization,
                                        provider_id=provider_id)
        provider_delete(provider=provider, actor=Actor.of_request(request))
        return Response(status=204)


class ApiKeyOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ApiKey"

    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's first characters, as lists show it")
    scope = serializers.CharField()
    status = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)

    def get_status(self, api_key: ApiKey) -> str:
        if api_key.revoked_at is not None:
            return "revoked"
        if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiKeysApi(ManagementApi):
    class CreateInputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ApiKeyCreateInput"

        name = serializers.CharField(max_length=100, required=False, default="",
                                     allow_blank=True)
        scope = serializers.ChoiceField(
            choices=ApiKey.Scope.values, default=ApiKey.Scope.PROXY,
            error_messages={"invalid_choice": choices_message(ApiKey.Scope.values)},
            help_text="proxy: /v1 and reading analytics; admin: also manages the "
                      "organization through this API")
        expires_at = serializers.DateTimeField(required=False,
                                               help_text="ISO 8601; naive means UTC")
        expires_in_days = serializers.IntegerField(required=False, min_value=1,
                                                   max_value=3650)

        def validate(self, attrs: dict) -> dict:
            if "expires_at" in attrs and "expires_in_days" in attrs:
                raise serializers.ValidationError("give expires_at or expires_in_days, "
                                                  "not both")
            if "expires_at" in attrs and attrs["expires_at"] <= timezone.now():
                raise serializers.ValidationError({"expires_at": "must be in the future"})
            return attrs

    class CreatedOutputSerializer(ApiKeyOutputSerializer):
        class Meta:
            ref_name = "ApiKeyCreated"

        key = serializers.SerializerMethodField(help_text="The raw key: in this answer only")

        def get_key(self, api_key: ApiKey) -> str:
            return self.context["raw_key"]

    @extend_schema(operation_id="keys_list", parameters=[ORG_PARAMETER],
                   responses=ApiKeyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        api_keys = api_keys_for_org(organization=self.organization)
        return Response(ApiKeyOutputSerializer(api_keys, many=True).data)

    @extend_schema(operation_id="keys_create", parameters=[ORG_PARAMETER],
                   request=CreateInputSerializer, responses={201: CreatedOutputSerializer})
    def post(self, request: Request) -> Response:
        params = self.CreateInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        days = data.get("expires_in_days")
        created = api_key_create(
            organization=self.organization,
            name=data["name"],
            scope=data["scope"],
            created_by=request.user if request.user.is_authenticated else None,
            expires_in=timedelta(days=days) if days else None,
            expires_at=data.get("expires_at"),
            actor=Actor.of_request(request),
        )
        output = self.CreatedOutputSerializer(created.api_key,
                                              context={"raw_key": created.raw_key})
        response = Response(output.data, status=201)
        # The raw key lives only in this answer: no cache may keep a copy.
        response["Cache-Control"] = "no-store"
        return response


class ApiKeyApi(ManagementApi):
    @extend_schema(operation_id="keys_retrieve", parameters=[ORG_PARAMETER],
                   responses=ApiKeyOutputSerializer)
    def get(self, request: Request, key_id: int) -> Response:
        api_key = api_key_get_for_org(organization=self.organization, key_id=key_id)
        return Response(ApiKeyOutputSerializer(api_key).data)

    # A DELETE's answer is a 204 to drf-spectacular unless the status is given: this one
    # answers 200 with the revoked key (schemathesis found the two disagreeing).
    @extend_schema(operation_id="keys_revoke_by_delete", parameters=[ORG_PARAMETER],
                   responses={200: ApiKeyOutputSerializer},
                   description="Revokes the key (it is kept, revoked, for the records)")
    def delete(self, request: Request, key_id: int) -> Response:
        return _revoke(self, key_id)


class ApiKeyRevokeApi(ManagementApi):
    @extend_schema(operation_id="keys_revoke", parameters=[ORG_PARAMETER], request=None,
                   responses=ApiKeyOutputSerializer)
    def post(self, request: Request, key_id: int) -> Response:
        return _revoke(self, key_id)


def _revoke(view: ManagementApi, key_id: int) -> Response:
    api_key = api_key_get_for_org(organization=view.organization, key_id=key_id)
    revoked = api_key_revoke(api_key=api_key, actor=Actor.of_request(view.request))
    return Response(ApiKeyOutputSerializer(revoked).data)


# The newest entries an answer holds; `?before=<id>` pages back.
AUDIT_PAGE = 100


class AuditEntryOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AuditEntry"

    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor = serializers.CharField(source="actor_label", help_text="A username, "
                                  "'API key cog_…', or the command that did it")
    actor_user_id = serializers.IntegerField(allow_null=True)
    actor_api_key_id = serializers.IntegerField(allow_null=True)
    action = serializers.CharField(help_text="<thing>.<verb>, e.g. provider.update")
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    object_label = serializers.CharField()
    before = serializers.JSONField(allow_null=True, help_text="Never holds a secret")
    after = serializers.JSONField(allow_null=True)


class AuditApi(ManagementApi):
    """Who changed the organization's keys, providers, routes and rules (limits and
    budgets: /api/limits/changes). Owners, admins and admin-scoped keys only: the
    trail names people and what they changed."""

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if not isinstance(request.auth, ApiKey) and not member_can_manage(
                organization=self.organization):
            raise exceptions.PermissionDenied("Only an owner or admin of the organization "
                                              "can read its audit trail", code="forbidden")

    @extend_schema(operation_id="audit_list", parameters=[
        ORG_PARAMETER,
        OpenApiParameter("before", int, description="Only entries older than this id"),
    ], responses=AuditEntryOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        entries = audit_entries_for_org(organization=self.organization)
        before = request.query_params.getlist("before")
        if before:
            # One id in ASCII digits: str.isdigit() admits '٣' and '𝟗', which int() reads.
            if len(before) > 1 or not (before[0].isascii() and before[0].isdigit()):
                raise serializers.ValidationError({"before": ["must be one entry id"]})
            entries = entries.filter(pk__lt=int(before[0]))
        return Response(AuditEntryOutputSerializer(entries[:AUDIT_PAGE], many=True).data)
