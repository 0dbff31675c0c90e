"""The analytics API: one APIView per operation, always about one organization.

Who may ask: an organization's API key (the key decides the organization), or a
logged-in member (the organization is `?org=<slug>`, optional for a member of only
one). Any other organization is a 404, so nobody learns which slugs exist.
Errors have OpenAI's shape, like every other JSON endpoint of the gateway.
"""

from datetime import timedelta

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.authentication import ApiKeyAuthentication
from analytics.recommendations import recommendations_for
from analytics.selectors import (
    BREAKDOWNS,
    INTERVALS,
    usage_breakdown,
    usage_summary,
    usage_timeseries,
)
from cognitude.errors import error_body
from organizations.errors import OrganizationNotChosen, OrganizationNotFound
from organizations.models import ApiKey, Organization
from organizations.selectors import organization_for_member

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_RANGE = timedelta(days=400)
MAX_BUCKETS = 2000
RECOMMENDATION_DAYS = (7, 30)

ORG_PARAMETER = OpenApiParameter(
    "org", str, description="Organization slug, for a logged-in member of several "
    "organizations. With an API key it may only name the key's own organization.",
)


def _choices_message(choices) -> str:
    return "must be one of " + ", ".join(str(c) for c in choices) + " (got {input!r})"


def _json_error(status: int, message: str, *, code: str | None = None,
                param: str | None = None) -> HttpResponse:
    return HttpResponse(error_body(status, message, code=code, param=param), status=status,
                        content_type="application/json")


def _validation_message(detail) -> tuple[str, str | None]:
    """The first problem of a serializer's errors, as (message, param)."""
    if isinstance(detail, dict):
        field, errors = next(iter(detail.items()))
        message, _ = _validation_message(errors)
        if field == "non_field_errors":
            return message, None
        return f"{field}: {message}", field
    if isinstance(detail, list) and detail:
        return _validation_message(detail[0])
    return str(detail), None


def api_exception_handler(exc: Exception, context: dict) -> HttpResponse | None:
    """DRF's errors in OpenAI's shape; anything else is left to Django (a 500)."""
    if isinstance(exc, OrganizationNotFound):
        return _json_error(404, str(exc), code="not_found")
    if isinstance(exc, exceptions.ValidationError):
        message, param = _validation_message(exc.detail)
        return _json_error(400, message, code="invalid_parameter", param=param)
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response = _json_error(exc.status_code, str(exc.detail),
                               code=codes if isinstance(codes, str) else None)
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        return response
    return None


class IsMemberOrApiKey(BasePermission):
    def has_permission(self, request: Request, view) -> bool:
        return isinstance(request.auth, ApiKey) or bool(
            request.user and request.user.is_authenticated
        )


def organization_for_request(request: Request) -> Organization:
    """The organization this request may read: the key's, or one of the user's."""
    slug = request.query_params.get("org") or None
    if isinstance(request.auth, ApiKey):
        organization = request.auth.organization
        if slug is not None and slug != organization.slug:
            raise OrganizationNotFound("No such organization")
        return organization
    try:
        return organization_for_member(user=request.user, slug=slug)
    except OrganizationNotChosen:
        raise exceptions.ValidationError(
            {"org": ["required: you are a member of several organizations"]}
        ) from None


class OrganizationApi(APIView):
    """Authentication, the organization, and OpenAI-style errors for the views below."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsMemberOrApiKey]
    renderer_classes = [JSONRenderer]
    organization: Organization

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self.organization = organization_for_request(request)

    def get_exception_handler(self):
        return api_exception_handler


class RangeInputSerializer(serializers.Serializer):
    """`period` (default 24h) or both `start` and `end` (ISO 8601; naive means UTC)."""

    period = serializers.ChoiceField(
        choices=list(PERIODS), required=False,
        error_messages={"invalid_choice": _choices_message(PERIODS)},
    )
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)

    def validate(self, attrs: dict) -> dict:
        start, end, period = attrs.get("start"), attrs.get("end"), attrs.get("period")
        if start is None and end is None:
            period = period or "24h"
            attrs["end"] = timezone.now()
            attrs["start"] = attrs["end"] - PERIODS[period]
            attrs["period"] = period
            return attrs
        if period is not None:
            raise serializers.ValidationError("give either period or start and end, not both")
        if start is None or end is None:
            raise serializers.ValidationError("start and end go together: give both")
        if end <= start:
            raise serializers.ValidationError("end must be after start")
        if end - start > MAX_RANGE:
            raise serializers.ValidationError(f"the range may span at most {MAX_RANGE.days} days")
        attrs["period"] = None
        return attrs


class RangeOutputSerializer(serializers.Serializer):
    organization = serializers.CharField(source="organization.slug")
    period = serializers.CharField(allow_null=True)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


def _money() -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=6, coerce_to_string=False)


class SummaryApi(OrganizationApi):
    class InputSerializer(RangeInputSerializer):
        pass

    class OutputSerializer(RangeOutputSerializer):
        class Meta:
            ref_name = "AnalyticsSummary"

        class HitsByTierSerializer(serializers.Serializer):
            redis = serializers.IntegerField()
            postgres = serializers.IntegerField()
            memory = serializers.IntegerField()
            coalesced = serializers.IntegerField()

        requests = serializers.IntegerField()
        hits = serializers.IntegerField()
        hit_rate = serializers.FloatField(help_text="hits / (hits + misses)")
        hits_by_tier = HitsByTierSerializer()
        misses = serializers.IntegerField()
        bypasses = serializers.IntegerField()
        errors = serializers.IntegerField()
        error_rate = serializers.FloatField()
        prompt_tokens = serializers.IntegerField()
        completion_tokens = serializers.IntegerField()
        cost = _money()
        saved = _money()
        unpriced_requests = serializers.IntegerField()
        p50_latency_ms = serializers.FloatField(allow_null=True)
        p95_latency_ms = serializers.FloatField(allow_null=True)

    @extend_schema(parameters=[InputSerializer, ORG_PARAMETER], responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        r = params.validated_data
        summary = usage_summary(organization=self.organization, start=r["start"], end=r["end"])
        return Response(self.OutputSerializer(
            {"organization": self.organization, **r, **summary}
        ).data)


class TimeseriesApi(OrganizationApi):
    class InputSerializer(RangeInputSerializer):
        interval = serializers.ChoiceField(
            choices=list(INTERVALS), required=False,
            error_messages={"invalid_choice": _choices_message(INTERVALS)},
            help_text="Default: hour for ranges up to 2 days, else day.",
        )

        def validate(self, attrs: dict) -> dict:
            attrs = super().validate(attrs)
            span = attrs["end"] - attrs["start"]
            attrs.setdefault("interval", "hour" if span <= timedelta(days=2) else "day")
            buckets = span / INTERVALS[attrs["interval"]]
            if buckets > MAX_BUCKETS:
                raise serializers.ValidationError(
                    f"that range has {buckets:.0f} {attrs['interval']}s; at most "
                    f"{MAX_BUCKETS} buckets: use interval=day or a shorter range"
                )
            return attrs

    class OutputSerializer(RangeOutputSerializer):
        class Meta:
            ref_name = "AnalyticsTimeseries"

        class BucketSerializer(serializers.Serializer):
            bucket = serializers.DateTimeField(help_text="Start of the hour or day, UTC")
            requests = serializers.IntegerField()
            hits_redis = serializers.IntegerField()
            hits_postgres = serializers.IntegerField()
            hits_other = serializers.IntegerField(help_text="in-process and coalesced hits")
            misses = serializers.IntegerField()
            bypasses = serializers.IntegerField()
            errors = serializers.IntegerField()
            cost = _money()
            saved = _money()

        interval = serializers.CharField()
        data = BucketSerializer(many=True)

    @extend_schema(parameters=[InputSerializer, ORG_PARAMETER], responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        r = params.validated_data
        series = usage_timeseries(organization=self.organization, start=r["start"],
                                  end=r["end"], interval=r["interval"])
        return Response(self.OutputSerializer(
            {"organization": self.organization, **r, "data": series}
        ).data)


class BreakdownApi(OrganizationApi):
    class InputSerializer(RangeInputSerializer):
        by = serializers.ChoiceField(
            choices=list(BREAKDOWNS), required=False, default="model",
            error_messages={"invalid_choice": _choices_message(BREAKDOWNS)},
        )

    class OutputSerializer(RangeOutputSerializer):
        class Meta:
            ref_name = "AnalyticsBreakdown"

        class RowSerializer(serializers.Serializer):
            key = serializers.CharField(
                help_text="The model asked for, the API key's prefix and name, or the endpoint"
            )
            requests = serializers.IntegerField()
            hits = serializers.IntegerField()
            hit_rate = serializers.FloatField()
            prompt_tokens = serializers.IntegerField()
            completion_tokens = serializers.IntegerField()
            cost = _money()
            saved = _money()
            p50_latency_ms = serializers.FloatField(allow_null=True)

        by = serializers.CharField()
        data = RowSerializer(many=True)

    @extend_schema(parameters=[InputSerializer, ORG_PARAMETER], responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        r = params.validated_data
        rows = usage_breakdown(organization=self.organization, start=r["start"], end=r["end"],
                               by=r["by"])
        return Response(self.OutputSerializer(
            {"organization": self.organization, **r, "data": rows}
        ).data)


class RecommendationsApi(OrganizationApi):
    class InputSerializer(serializers.Serializer):
        days = serializers.ChoiceField(
            choices=RECOMMENDATION_DAYS, required=False, default=7,
            error_messages={"invalid_choice": _choices_message(RECOMMENDATION_DAYS)},
        )

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Recommendations"

        class RecommendationSerializer(serializers.Serializer):
            kind = serializers.CharField()
            title = serializers.CharField()
            explanation = serializers.CharField()
            evidence = serializers.DictField()
            monthly_saving = serializers.DecimalField(max_digits=20, decimal_places=2,
                                                      coerce_to_string=False)

        organization = serializers.CharField(source="organization.slug")
        days = serializers.IntegerField()
        data = RecommendationSerializer(many=True)

    @extend_schema(parameters=[InputSerializer, ORG_PARAMETER], responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        days = params.validated_data["days"]
        found = recommendations_for(organization=self.organization, days=days)
        return Response(self.OutputSerializer(
            {"organization": self.organization, "days": days, "data": found}
        ).data)

