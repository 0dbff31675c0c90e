"""The management API for limits and budgets (/api/limits, /api/budgets): one APIView
per resource, one method per operation. Who may: organizations.api.ManagementApi (an
admin-scoped key, or a member; writing takes an owner or admin). Every change is
audited (/api/limits/changes). Rejected requests by reason (/api/limits/rejections) are
read like the analytics API: any key of the organization, or a member.
"""

from decimal import Decimal

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from analytics.views import RangeInputSerializer, RangeOutputSerializer
from organizations.api import ORG_PARAMETER, ManagementApi, OrganizationApi, choices_message
from organizations.models import ApiKey, Organization
from ratelimit.errors import BudgetNotFound, LimitNotFound
from ratelimit.models import Budget
from ratelimit.selectors import (
    api_key_by_prefix,
    budget_crossings_for_org,
    budget_get_for_org,
    budget_period_now,
    budget_spend,
    budgets_for_org,
    limit_changes_for_org,
    limit_get_for_org,
    limit_policy_get,
    limits_for_org,
    rejections_by_reason,
)
from ratelimit.services import (
    LIMIT_FIELDS,
    Actor,
    budget_delete,
    budget_set,
    limit_delete,
    limit_policy_set,
    limit_set,
)
from ratelimit.usage import limits_usage

CHANGES_SHOWN = 200


def _actor(request: Request) -> Actor:
    if isinstance(request.auth, ApiKey):
        return Actor(label=f"API key {request.auth.prefix}")
    return Actor.of_user(request.user)


def _key(organization: Organization, prefix: str | None) -> ApiKey | None:
    return api_key_by_prefix(organization=organization, prefix=prefix) if prefix else None


class _Api(ManagementApi):
    domain_errors = {
        **ManagementApi.domain_errors,
        LimitNotFound: (404, "not_found"),
        BudgetNotFound: (404, "not_found"),
    }


class LimitOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Limit"

    id = serializers.IntegerField()
    api_key = serializers.CharField(source="api_key.prefix", allow_null=True, default=None,
                                    help_text="The key's prefix; null for the organization")
    model = serializers.CharField(help_text="Empty for every model")
    requests_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_minute = serializers.IntegerField(allow_null=True)
    requests_per_day = serializers.IntegerField(allow_null=True)
    concurrent_requests = serializers.IntegerField(allow_null=True)
    in_use = serializers.DictField(child=serializers.IntegerField(), allow_null=True,
                                   help_text="rpm, tpm, rpd, conc in use now; null while the "
                                             "limits Redis is unreachable")
    updated_at = serializers.DateTimeField()


def _limits_data(limits: list) -> list[dict]:
    usage = limits_usage(limits=limits)
    for limit in limits:
        limit.in_use = usage.get(limit.pk, {}) if usage is not None else None
    return LimitOutputSerializer(limits, many=True).data


# The columns are PostgreSQL integers: a bigger number is a 400, not the database's error.
LIMIT_MAX = 2**31 - 1


class LimitInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "LimitInput"

    api_key = serializers.CharField(required=False, allow_null=True, default=None,
                                    help_text="A key's prefix (cog_ and 8 characters); "
                                              "leave out for the organization")
    model = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=LIMIT_MAX)
    tokens_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=LIMIT_MAX)
    requests_per_day = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=LIMIT_MAX)
    concurrent_requests = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=LIMIT_MAX)


class LimitsApi(_Api):
    @extend_schema(operation_id="limits_list", parameters=[ORG_PARAMETER],
                   responses=LimitOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(_limits_data(list(limits_for_org(organization=self.organization))))

    @extend_schema(operation_id="limits_set", parameters=[ORG_PARAMETER],
                   request=LimitInputSerializer,
                   responses={200: LimitOutputSerializer,
                              204: OpenApiResponse(description="no limit left: removed")},
                   description="Sets the named limits of a scope (the organization, a key, "
                               "either for one model); the others keep theirs; 0 or null "
                               "removes one.")
    def post(self, request: Request) -> Response:
        params = LimitInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        limit = limit_set(organization=self.organization,
                          api_key=_key(self.organization, data["api_key"]),
                          model=data["model"], actor=_actor(request),
                          values={name: data[name] for name in LIMIT_FIELDS if name in data})
        if limit is None:
            return Response(status=204)
        return Response(_limits_data([limit])[0])


class LimitApi(_Api):
    @extend_schema(operation_id="limits_retrieve", parameters=[ORG_PARAMETER],
                   responses=LimitOutputSerializer)
    def get(self, request: Request, limit_id: int) -> Response:
        limit = limit_get_for_org(organization=self.organization, limit_id=limit_id)
        return Response(_limits_data([limit])[0])

    @extend_schema(operation_id="limits_delete", parameters=[ORG_PARAMETER],
                   responses={204: None})
    def delete(self, request: Request, limit_id: int) -> Response:
        limit = limit_get_for_org(organization=self.organization, limit_id=limit_id)
        limit_delete(limit=limit, actor=_actor(request))
        return Response(status=204)


class PolicySerializer(serializers.Serializer):
    class Meta:
        ref_name = "LimitPolicy"

    fail_closed = serializers.BooleanField(
        help_text="true: 503 while the limits Redis is unreachable; false (the default): "
                  "served, each process holding the limits by itself")


class LimitPolicyApi(_Api):
    @extend_schema(operation_id="limits_policy_retrieve", parameters=[ORG_PARAMETER],
                   responses=PolicySerializer)
    def get(self, request: Request) -> Response:
        return Response(PolicySerializer(limit_policy_get(organization=self.organization)).data)

    @extend_schema(operation_id="limits_policy_set", parameters=[ORG_PARAMETER],
                   request=PolicySerializer, responses=PolicySerializer)
    def put(self, request: Request) -> Response:
        params = PolicySerializer(data=request.data)
        params.is_valid(raise_exception=True)
        policy = limit_policy_set(organization=self.organization,
                                  fail_closed=params.validated_data["fail_closed"],
                                  actor=_actor(request))
        return Response(PolicySerializer(policy).data)


def _money() -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=8, coerce_to_string=False)


class BudgetOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Budget"

    id = serializers.IntegerField()
    api_key = serializers.CharField(source="api_key.prefix", allow_null=True, default=None)
    period = serializers.CharField()
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=4,
                                         coerce_to_string=False)
    soft = serializers.BooleanField()
    period_start = serializers.DateTimeField(help_text="In the organization's time zone")
    period_end = serializers.DateTimeField()
    spent_usd = _money()
    used = serializers.FloatField(help_text="spent / limit (1.0 = the limit)")
    updated_at = serializers.DateTimeField()


def _budget_data(budget: Budget) -> dict:
    period, spent = budget_period_now(budget=budget), budget_spend(budget=budget)
    budget.period_start, budget.period_end, budget.spent_usd = period.start, period.end, spent
    budget.used = float(spent / budget.limit_usd) if budget.limit_usd else 1.0
    return BudgetOutputSerializer(budget).data


class BudgetInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "BudgetInput"

    api_key = serializers.CharField(required=False, allow_null=True, default=None)
    period = serializers.ChoiceField(
        choices=Budget.Period.values,
        error_messages={"invalid_choice": choices_message(Budget.Period.values)})
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=4,
                                         min_value=Decimal(0))
    soft = serializers.BooleanField(default=False)


class BudgetsApi(_Api):
    @extend_schema(operation_id="budgets_list", parameters=[ORG_PARAMETER],
                   responses=BudgetOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response([_budget_data(b) for b in budgets_for_org(organization=self.organization)])

    @extend_schema(operation_id="budgets_set", parameters=[ORG_PARAMETER],
                   request=BudgetInputSerializer, responses=BudgetOutputSerializer,
                   description="Creates or changes the budget of a scope and period.")
    def post(self, request: Request) -> Response:
        params = BudgetInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        budget = budget_set(organization=self.organization,
                            api_key=_key(self.organization, data["api_key"]),
                            period=data["period"], limit_usd=data["limit_usd"],
                            soft=data["soft"], actor=_actor(request))
        return Response(_budget_data(budget))


class BudgetApi(_Api):
    @extend_schema(operation_id="budgets_retrieve", parameters=[ORG_PARAMETER],
                   responses=BudgetOutputSerializer)
    def get(self, request: Request, budget_id: int) -> Response:
        budget = budget_get_for_org(organization=self.organization, budget_id=budget_id)
        return Response(_budget_data(budget))

    @extend_schema(operation_id="budgets_delete", parameters=[ORG_PARAMETER],
                   responses={204: None})
    def delete(self, request: Request, budget_id: int) -> Response:
        budget = budget_get_for_org(organization=self.organization, budget_id=budget_id)
        budget_delete(budget=budget, actor=_actor(request))
        return Response(status=204)


class CrossingSerializer(serializers.Serializer):
    class Meta:
        ref_name = "BudgetCrossing"

    budget = serializers.IntegerField(source="budget_id", allow_null=True)
    api_key = serializers.CharField(source="api_key.prefix", allow_null=True, default=None)
    period = serializers.CharField()
    period_start = serializers.DateField()
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=4,
                                         coerce_to_string=False)
    spend_usd = _money()
    soft = serializers.BooleanField()
    at = serializers.DateTimeField()


class BudgetCrossingsApi(_Api):
    @extend_schema(operation_id="budgets_crossings", parameters=[ORG_PARAMETER],
                   responses=CrossingSerializer(many=True),
                   description="Each budget whose period spend reached its limit, once "
                               "per period, newest first")
    def get(self, request: Request) -> Response:
        crossings = budget_crossings_for_org(organization=self.organization)[:CHANGES_SHOWN]
        return Response(CrossingSerializer(crossings, many=True).data)


class ChangeSerializer(serializers.Serializer):
    class Meta:
        ref_name = "LimitChange"

    target = serializers.CharField()
    subject = serializers.CharField()
    actor = serializers.CharField(source="actor_label")
    old = serializers.JSONField(allow_null=True)
    new = serializers.JSONField(allow_null=True)
    at = serializers.DateTimeField()


class LimitChangesApi(_Api):
    @extend_schema(operation_id="limits_changes", parameters=[ORG_PARAMETER],
                   responses=ChangeSerializer(many=True),
                   description=f"The latest {CHANGES_SHOWN} changes to limits, budgets and "
                               "the policy: who, when, before and after")
    def get(self, request: Request) -> Response:
        changes = limit_changes_for_org(organization=self.organization)[:CHANGES_SHOWN]
        return Response(ChangeSerializer(changes, many=True).data)


class RejectionsApi(OrganizationApi):
    """Read like the analytics API: any key of the organization, or a member."""

    class OutputSerializer(RangeOutputSerializer):
        class Meta:
            ref_name = "LimitRejections"

        class RowSerializer(serializers.Serializer):
            class Meta:
                ref_name = "LimitRejectionRow"

            reason = serializers.CharField(help_text="The request record's error_type")
            label = serializers.CharField()
            requests = serializers.IntegerField()

        data = RowSerializer(many=True)

    @extend_schema(operation_id="limits_rejections",
                   parameters=[RangeInputSerializer, ORG_PARAMETER],
                   responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        params = RangeInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        r = params.validated_data
        rows = rejections_by_reason(organization=self.organization, start=r["start"],
                                    end=r["end"])
        return Response(self.OutputSerializer(
            {"organization": self.organization, **r, "data": rows}).data)
