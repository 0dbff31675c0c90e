"""The organization members' pages. Each view reaches its organization through
`organization_for_member` and then calls one selector or service per concern."""

import csv
from datetime import timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from caching.services import cache_clear, cache_stats
from dashboard.access import (
    api_key_for_member,
    can_manage,
    organization_for_member,
    provider_for_member,
    route_for_member,
)
from dashboard.charts import hit_rate_chart, requests_chart
from dashboard.forms import ApiKeyCreateForm, CacheClearForm, ProviderForm, RouteForm
from dashboard.periods import PERIODS, Period, period_for
from dashboard.selectors import breakdown_get, overview_get, recommendations_get
from organizations.errors import ProviderInUse
from organizations.models import Organization
from organizations.selectors import (
    api_keys_for_org,
    organizations_for_user,
    provider_for_org,
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
from routing.errors import RouteInUse
from routing.models import ModelRoute
from routing.selectors import routes_for_org
from routing.services import (
    route_delete,
    route_set,
    route_target_text,
    route_targets_parse,
    route_update,
)

BREAKDOWN_LABELS = {"model": "Model", "api_key": "API key", "endpoint": "Endpoint",
                    "provider": "Provider"}
# column -> heading, in the order shown and exported
USAGE_COLUMNS = {
    "key": "",
    "requests": "Requests",
    "hits": "Hits",
    "hit_rate": "Hit rate",
    "prompt_tokens": "Prompt tokens",
    "completion_tokens": "Completion tokens",
    "cost": "Spend (USD)",
    "saved": "Saved (USD)",
    "p50_latency_ms": "p50 latency",
}
TOP_RECOMMENDATIONS = 3


class _HiddenFromRepr(str):
    """Renders as itself but not in repr(): when a template variable is missing, Django
    logs (DEBUG) a message holding repr() of the whole context, raw key included."""

    def __repr__(self) -> str:
        return "'<redacted>'"


def _render(request: HttpRequest, organization: Organization, template: str, section: str,
            context: dict[str, Any], *, status: int = 200) -> HttpResponse:
    """Render a page of one organization, with what the layout needs (the switcher)."""
    return render(request, template, {
        "organization": organization,
        "organizations": organizations_for_user(user=request.user),
        "can_manage": can_manage(organization),
        "section": section,
        **context,
    }, status=status)


def _periods(current: Period) -> list[dict]:
    return [{"name": name, "label": label, "active": name == current.name}
            for name, (label, _, _) in PERIODS.items()]


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    first = organizations_for_user(user=request.user).first()
    if first is not None:
        return redirect("dashboard:overview", slug=first.slug)
    return render(request, "dashboard/no_organization.html")


@login_required
@require_GET
def overview(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug)
    period = period_for(request.GET.get("period"))
    data = overview_get(organization=organization, period=period)
    summary, series = data["summary"], data["series"]
    return _render(request, organization, "dashboard/overview.html", "overview", {
        "period": period,
        "periods": _periods(period),
        "summary": summary,
        "tokens": summary["prompt_tokens"] + summary["completion_tokens"],
        "hit_rate_chart": hit_rate_chart(series, period.interval),
        "requests_chart": requests_chart(series, period.interval),
    })


@login_required
@require_GET
def top_recommendations(request: HttpRequest, slug: str) -> HttpResponse:
    """The overview's recommendations panel, fetched by the page once it is shown: on a
    busy organization they take longer than everything else on the page together."""
    organization = organization_for_member(request.user, slug)
    period = period_for(request.GET.get("period"))
    found = recommendations_get(organization=organization, days=period.days)
    return render(request, "dashboard/_top_recommendations.html", {
        "organization": organization,
        "period": period,
        "recommendations": found[:TOP_RECOMMENDATIONS],
        "more_recommendations": max(0, len(found) - TOP_RECOMMENDATIONS),
    })


def _sorted_rows(rows: list[dict], sort: str, descending: bool) -> list[dict]:
    def value(row: dict) -> tuple:
        item = row[sort]
        # Missing values (no latency) sort last either way round.
        if item is None:
            return (0 if descending else 1, 0)
        return (1 if descending else 0, item.lower() if isinstance(item, str) else item)

    return sorted(rows, key=value, reverse=descending)


def _usage_rows(request: HttpRequest, organization: Organization
                ) -> tuple[Period, str, str, bool, list[dict]]:
    period = period_for(request.GET.get("period"))
    by = request.GET.get("by") if request.GET.get("by") in BREAKDOWN_LABELS else "model"
    sort = request.GET.get("sort") if request.GET.get("sort") in USAGE_COLUMNS else "requests"
    descending = request.GET.get("dir", "desc" if sort != "key" else "asc") == "desc"
    rows = [{**row, "key": "" if row["key"] is None else str(row["key"])}
            for row in breakdown_get(organization=organization, period=period, by=by)]
    return period, by, sort, descending, _sorted_rows(rows, sort, descending)


@login_required
@require_GET
def usage(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug)
    period, by, sort, descending, rows = _usage_rows(request, organization)
    headings = [
        {
            "column": column,
            "label": label or BREAKDOWN_LABELS[by],
            "active": column == sort,
            "descending": descending,
            # A click on the active column flips it; on another, starts with the biggest.
            "dir": ("asc" if descending else "desc") if column == sort
            else ("asc" if column == "key" else "desc"),
        }
        for column, label in USAGE_COLUMNS.items()
    ]
    return _render(request, organization, "dashboard/usage.html", "usage", {
        "period": period,
        "periods": _periods(period),
        "by": by,
        "breakdowns": BREAKDOWN_LABELS,
        "sort": sort,
        "dir": "desc" if descending else "asc",
        "headings": headings,
        "rows": rows,
    })


@login_required
@require_GET
def usage_csv(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug)
    period, by, _, _, rows = _usage_rows(request, organization)
    filename = f"{organization.slug}-usage-by-{by}-{period.name}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(["period_start", "period_end", by, *list(USAGE_COLUMNS)[1:]])
    for row in rows:
        writer.writerow([period.start.isoformat(), period.end.isoformat(),
                         *(_csv_value(row[column]) for column in USAGE_COLUMNS)])
    return response


def _csv_value(value: Any) -> Any:
    # A spreadsheet runs a cell starting with = + - @ as a formula: model names and key
    # names are chosen by API callers, so they must not become formulas.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    if isinstance(value, Decimal):
        return f"{value:f}"
    return "" if value is None else value


def _ttl_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day{'s' if seconds != 86400 else ''}"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


@login_required
@require_GET
def cache(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug)
    stats = async_to_sync(cache_stats)(org_id=organization.pk)
    ttl = organization.cache_ttl_seconds or settings.COGNITUDE_CACHE_TTL
    return _render(request, organization, "dashboard/cache.html", "cache", {
        "stats": stats,
        "ttl_seconds": ttl,
        "ttl_label": _ttl_label(ttl),
        "ttl_is_default": organization.cache_ttl_seconds is None,
    })


@login_required
@require_http_methods(["GET", "POST"])
def cache_clear_view(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the confirmation page; POST (from it): clear."""
    organization = organization_for_member(request.user, slug, manage=True)
    form = CacheClearForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        form = CacheClearForm(initial={"tier": "all"})
        return _render(request, organization, "dashboard/cache_clear.html", "cache",
                       {"form": form, "tier": "all"})
    tier = form.cleaned_data["tier"]
    if request.method == "GET":
        return _render(request, organization, "dashboard/cache_clear.html", "cache",
                       {"form": form, "tier": tier})
    deleted = async_to_sync(cache_clear)(org_id=organization.pk, hot_only=tier == "redis")
    if tier == "redis":
        messages.success(request, "Cleared the hot tier (Redis). PostgreSQL still holds "
                                  "every entry and will refill Redis on the next hits.")
    else:
        messages.success(request, f"Cleared the cache: Redis, and {deleted} "
                                  f"entr{'y' if deleted == 1 else 'ies'} in PostgreSQL.")
    return redirect("dashboard:cache", slug=organization.slug)


def _keys_page(request: HttpRequest, organization: Organization, form: ApiKeyCreateForm,
               *, status: int = 200) -> HttpResponse:
    return _render(request, organization, "dashboard/keys.html", "keys", {
        "api_keys": api_keys_for_org(organization=organization).select_related("created_by"),
        "form": form,
        "now": timezone.now(),
    }, status=status)


@login_required
@require_GET
def keys(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug)
    return _keys_page(request, organization, ApiKeyCreateForm())


@never_cache
@login_required
@require_POST
def key_create(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, organization, form, status=400)
    days = form.cleaned_data["expires_in_days"]
    created = api_key_create(
        organization=organization,
        name=form.cleaned_data["name"],
        scope=form.cleaned_data["scope"],
        created_by=request.user,
        expires_in=timedelta(days=days) if days else None,
        actor=Actor.of_user(request.user),
    )
    # The raw key lives only in this response (never_cache: no copy in any cache); it
    # is not put in the session or a message, so no later page can show it again.
    return _render(request, organization, "dashboard/key_created.html", "keys", {
        "api_key": created.api_key,
        "raw_key": _HiddenFromRepr(created.raw_key),
        "keys_url": reverse("dashboard:keys", args=[organization.slug]),
    })


@login_required
@require_POST
def key_revoke(request: HttpRequest, slug: str, key_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    api_key = api_key_for_member(organization, key_id)
    api_key_revoke(api_key=api_key, actor=Actor.of_user(request.user))
    messages.success(request, f"Revoked {api_key.prefix}… ({api_key.name or 'unnamed'}). "
                              "The gateway refuses it within seconds.")
    return redirect("dashboard:keys", slug=organization.slug)


def _provider_fields(form: ProviderForm) -> dict[str, Any]:
    data = form.cleaned_data
    return {field: data[field] for field in ("name", "kind", "base_url", "api_version",
                                             "enabled", "is_default")}


@login_required
@require_http_methods(["GET", "POST"])
def providers(request: HttpRequest, slug: str) -> HttpResponse:
    """The organization's providers; POST (owners, admins) adds one."""
    organization = organization_for_member(request.user, slug,
                                           manage=request.method == "POST")
    status = 200
    if request.method == "POST":
        form = ProviderForm(request.POST, has_stored_key=False)
        if form.is_valid():
            try:
                provider = provider_add(organization=organization,
                                        api_key=form.cleaned_data["api_key"],
                                        actor=Actor.of_user(request.user),
                                        **_provider_fields(form))
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, f"Added the provider {provider.name}. New "
                                          "requests can use it within seconds.")
                return redirect("dashboard:providers", slug=organization.slug)
        status = 400
    else:
        form = ProviderForm(initial={"kind": "openai", "enabled": True},
                            has_stored_key=False)
    return _render(request, organization, "dashboard/providers.html", "providers", {
        "providers": providers_for_org(organization=organization),
        "form": form,
    }, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def provider_edit(request: HttpRequest, slug: str, provider_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug,
                                           manage=request.method == "POST")
    provider = provider_for_member(organization, provider_id)
    status = 200
    if request.method == "POST":
        form = ProviderForm(request.POST, has_stored_key=True)
        if form.is_valid():
            try:
                provider_update(provider=provider, api_key=form.cleaned_data["api_key"],
                                actor=Actor.of_user(request.user),
                                **_provider_fields(form))
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, f"Saved the provider {provider.name}. New "
                                          "requests use it within seconds.")
                return redirect("dashboard:providers", slug=organization.slug)
        status = 400
        provider.refresh_from_db()  # the page shows what is stored, not the refused edit
    else:
        form = ProviderForm(has_stored_key=True, initial={
            field: getattr(provider, field) for field in ("name", "kind", "base_url",
                                                          "api_version", "enabled",
                                                          "is_default")})
    return _render(request, organization, "dashboard/provider.html", "providers",
                   {"provider": provider, "form": form}, status=status)


@login_required
@require_POST
def provider_remove(request: HttpRequest, slug: str, provider_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    provider = provider_for_member(organization, provider_id)
    try:
        provider_delete(provider=provider, actor=Actor.of_user(request.user))
    except ProviderInUse as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:provider", slug=organization.slug, provider_id=provider.pk)
    messages.success(request, f"Deleted the provider {provider.name}.")
    return redirect("dashboard:providers", slug=organization.slug)


def _route_save(organization: Organization, form: RouteForm,
                route: ModelRoute | None, actor: Actor) -> ModelRoute | None:
    """Write the route of a valid form (replacing `route`, or the one of the same
    name); None, with the problem on the form, when the services refuse it."""
    try:
        fields = {"name": form.cleaned_data["name"],
                  "strategy": form.cleaned_data["strategy"],
                  "retry_on": form.cleaned_data["retry_on"],
                  "targets": route_targets_parse(organization=organization,
                                                 texts=form.target_lines())}
        if route is None:
            route, _ = route_set(organization=organization, actor=actor, **fields)
            return route
        return route_update(route=route, actor=actor, **fields)
    except ValidationError as exc:
        form.add_error(None, exc)
    except RouteInUse as exc:
        form.add_error("name", str(exc))
    return None


@login_required
@require_http_methods(["GET", "POST"])
def routes(request: HttpRequest, slug: str) -> HttpResponse:
    """The organization's model routes; POST (owners, admins) sets one by name."""
    organization = organization_for_member(request.user, slug,
                                           manage=request.method == "POST")
    status = 200
    if request.method == "POST":
        form = RouteForm(request.POST)
        if form.is_valid():
            route = _route_save(organization, form, None, Actor.of_user(request.user))
            if route is not None:
                messages.success(request, f"Saved the route {route.name}. New requests "
                                          "follow it within seconds.")
                return redirect("dashboard:routes", slug=organization.slug)
        status = 400
    else:
        form = RouteForm()
    return _render(request, organization, "dashboard/routes.html", "routes", {
        "routes": [(route, [route_target_text(t) for t in route.targets.all()])
                   for route in routes_for_org(organization=organization)],
        "providers": providers_for_org(organization=organization),
        "default": provider_for_org(organization=organization),
        "form": form,
    }, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def route_edit(request: HttpRequest, slug: str, route_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug,
                                           manage=request.method == "POST")
    route = route_for_member(organization, route_id)
    status = 200
    if request.method == "POST":
        form = RouteForm(request.POST)
        actor = Actor.of_user(request.user)
        if form.is_valid() and _route_save(organization, form, route, actor) is not None:
            messages.success(request, f"Saved the route {form.cleaned_data['name']}.")
            return redirect("dashboard:routes", slug=organization.slug)
        status = 400
        route = route_for_member(organization, route_id)
    else:
        form = RouteForm(initial={
            "name": route.name, "strategy": route.strategy, "retry_on": route.retry_on,
            "targets": "\n".join(route_target_text(t) for t in route.targets.all()),
        })
    return _render(request, organization, "dashboard/route.html", "routes",
                   {"route": route, "form": form}, status=status)


@login_required
@require_POST
def route_remove(request: HttpRequest, slug: str, route_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    route = route_for_member(organization, route_id)
    try:
        route_delete(route=route, actor=Actor.of_user(request.user))
    except RouteInUse as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:route", slug=organization.slug, route_id=route.pk)
    messages.success(request, f"Deleted the route {route.name}.")
    return redirect("dashboard:routes", slug=organization.slug)


@login_required
@require_GET
def recommendations(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug)
    period = period_for(request.GET.get("period") or "7d")
    found = recommendations_get(organization=organization, days=period.days)
    return _render(request, organization, "dashboard/recommendations.html",
                   "recommendations", {
                       "period": period,
                       "periods": _periods(period),
                       "recommendations": found,
                       "total_saving": sum((r.monthly_saving for r in found), Decimal(0)),
                   })
