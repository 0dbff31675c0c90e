"""The analytics API: one APIView per operation, always about one organization.

Who may ask, and the errors' shape: organizations.api (any API key of the organization,
or a member).
"""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from analytics.recommendations import recommendations_for
from analytics.selectors import (
    BREAKDOWNS,
    INTERVALS,
    feedback_for_org,
    routing_by_tier,
    usage_breakdown,
    usage_summary,
    usage_timeseries,
)
from caching.outcomes import CacheTier
from organizations.api import ORG_PARAMETER, OrganizationApi
from organizations.api import choices_message as _choices_message

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_RANGE = timedelta(days=400)
MAX_BUCKETS = 2000
RECOMMENDATION_DAYS = (7, 30)


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

        # A field per tier (caching.outcomes), so that a new tier shows here by itself.
        HitsByTierSerializer = type("HitsByTierSerializer", (serializers.Serializer,), {
            tier.value: serializers.IntegerField() for tier in CacheTier})

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
                help_text="The model asked for, the API key's prefix and name, the endpoint, "
                          "the provider, or smart routing's tier (\"\": not routed)"
            )
            requests = serializers.IntegerField()
            hits = serializers.IntegerField()
            hit_rate = serializers.FloatField()
            prompt_tokens = serializers.IntegerField()
            completion_tokens = serializers.IntegerField()
            cost = _money()
            saved = _money()
            routing_saved = _money()
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



class RoutingApi(OrganizationApi):
    class InputSerializer(RangeInputSerializer):
        pass

    class OutputSerializer(RangeOutputSerializer):
        class Meta:
            ref_name = "AnalyticsRouting"

        class TierSerializer(serializers.Serializer):
            mode = serializers.CharField(help_text="on, or shadow (decided, not applied)")
            tier = serializers.CharField()
            requests = serializers.IntegerField()
            hits = serializers.IntegerField()
            cost = _money()
            saved = _money()
            asked_cost = _money()
            routing_saved = _money()
            feedback = serializers.IntegerField()
            up_share = serializers.FloatField()
            down_share = serializers.FloatField()
            mean_score = serializers.FloatField(allow_null=True)

        data = TierSerializer(many=True)

    @extend_schema(parameters=[InputSerializer, ORG_PARAMETER], responses=OutputSerializer,
                   description="Smart routing per mode and tier: requests, spend, the "
                               "cache's and routing's savings, and the feedback on them")
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        r = params.validated_data
        rows = routing_by_tier(organization=self.organization, start=r["start"], end=r["end"])
        return Response(self.OutputSerializer(
            {"organization": self.organization, **r, "data": rows}).data)


MAX_FEEDBACK_ROWS = 500


class FeedbackApi(OrganizationApi):
    class InputSerializer(serializers.Serializer):
        request_id = serializers.RegexField(r"^[0-9A-Za-z_-]{1,64}$", required=False,
                                            help_text="The X-Request-Id of an answer")

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Feedback"

        request_id = serializers.CharField()
        score = serializers.FloatField()
        rating = serializers.CharField(allow_blank=True)
        note = serializers.CharField(allow_blank=True)
        created_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()

    @extend_schema(parameters=[InputSerializer, ORG_PARAMETER],
                   responses=OutputSerializer(many=True),
                   description=f"The organization's feedback (POST /v1/feedback), newest "
                               f"first, at most {MAX_FEEDBACK_ROWS}; ?request_id= for one")
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        found = feedback_for_org(organization=self.organization,
                                 request_id=params.validated_data.get("request_id"))
        return Response(self.OutputSerializer(found[:MAX_FEEDBACK_ROWS], many=True).data)
