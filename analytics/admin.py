from django.contrib import admin
from django.http import HttpRequest

from analytics.models import Feedback, ModelPrice, RequestLog


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "provider", "input_per_million", "output_per_million",
                    "effective_from", "context_window", "supports_tools",
                    "supports_json_schema", "supports_images"]
    list_filter = ["provider"]
    search_fields = ["model"]
    ordering = ["provider", "model", "-effective_from"]


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    """Read-only: the records are what happened; the pipeline alone writes them."""

    list_display = ["created_at", "organization", "endpoint", "model_requested",
                    "model_used", "route_tier", "cache_outcome", "status", "prompt_tokens",
                    "completion_tokens", "cost", "saved_cost", "routing_saved_cost",
                    "latency_ms"]
    # Only filters whose choices need no query: a DISTINCT over millions of rows per page
    # view would make the admin crawl.
    list_filter = ["cache_outcome", "streamed", "cache_bypassed", "route_mode", "route_tier"]
    search_fields = ["=request_id"]
    list_select_related = ["organization"]
    # The change list on millions of rows: no COUNT(*) over the whole table per page.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    """Read-only: what callers said through POST /v1/feedback."""

    list_display = ["updated_at", "organization", "request_id", "score", "rating"]
    list_filter = ["rating"]
    search_fields = ["=request_id"]
    list_select_related = ["organization"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
