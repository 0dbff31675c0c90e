"""The Limits page: an organization's rate limits and budgets with what is in use, the
requests they refused, and the audit of their changes. Every member sees it; owners and
admins change it (through ratelimit.services, audited as themselves)."""

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from dashboard.access import budget_for_member, limit_for_member, organization_for_member
from dashboard.views import _render
from organizations.models import ApiKey, Organization
from organizations.selectors import api_keys_for_org
from ratelimit.models import Budget
from ratelimit.selectors import (
    budget_period_now,
    budget_spend,
    budgets_for_org,
    limit_changes_for_org,
    limit_policy_get,
    limits_for_org,
    rejections_by_reason,
)
from ratelimit.services import (
    Actor,
    budget_delete,
    budget_set,
    limit_delete,
    limit_policy_set,
    limit_set,
)
from ratelimit.usage import limits_usage

CHANGES_SHOWN = 10
# (Limit field, label, what in ratelimit.usage)
MEASURES = [("requests_per_minute", "Requests / min", "rpm"),
            ("tokens_per_minute", "Tokens / min", "tpm"),
            ("requests_per_day", "Requests / day", "rpd"),
            ("concurrent_requests", "In flight", "conc")]


class _KeyChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: ApiKey) -> str:
        return f"{obj.prefix}… ({obj.name})" if obj.name else f"{obj.prefix}…"


def _key_field(organization: Organization) -> _KeyChoice:
    return _KeyChoice(queryset=api_keys_for_org(organization=organization), required=False,
                      empty_label="The whole organization", label="Applies to")


class LimitForm(forms.Form):
    model = forms.CharField(max_length=200, required=False,
                            help_text="Only requests for this model; empty for all.")
    requests_per_minute = forms.IntegerField(min_value=0, required=False, label="Requests / min")
    tokens_per_minute = forms.IntegerField(min_value=0, required=False, label="Tokens / min")
    requests_per_day = forms.IntegerField(min_value=0, required=False, label="Requests / day")
    concurrent_requests = forms.IntegerField(min_value=0, required=False, label="In flight")

    def __init__(self, *args, organization: Organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields = {"api_key": _key_field(organization), **self.fields}

    def clean(self) -> dict:
        data = super().clean()
        if not any(data.get(name) for name, _, _ in MEASURES):
            raise ValidationError("Set at least one limit.")
        return data


class BudgetForm(forms.Form):
    period = forms.ChoiceField(choices=Budget.Period.choices)
    limit_usd = forms.DecimalField(label="Limit (USD)", min_value=0, max_digits=14,
                                   decimal_places=4)
    soft = forms.BooleanField(required=False, label="Soft (allow, record the crossing)")

    def __init__(self, *args, organization: Organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields = {"api_key": _key_field(organization), **self.fields}


def _limit_rows(organization: Organization) -> tuple[list[dict], bool]:
    limits = list(limits_for_org(organization=organization))
    usage = limits_usage(limits=limits)
    rows = []
    for limit in limits:
        in_use = usage.get(limit.pk, {}) if usage is not None else {}
        rows.append({"limit": limit, "measures": [
            {"label": label, "limit": getattr(limit, field), "used": in_use.get(what)}
            for field, label, what in MEASURES]})
    return rows, usage is not None


def _budget_rows(organization: Organization) -> list[dict]:
    rows = []
    for budget in budgets_for_org(organization=organization):
        spent = budget_spend(budget=budget)
        rows.append({"budget": budget, "period": budget_period_now(budget=budget),
                     "spent": spent,
                     "used": min(1.0, float(spent / budget.limit_usd)) if budget.limit_usd
                     else 1.0})
    return rows


def _page(request: HttpRequest, organization: Organization, *, limit_form=None,
          budget_form=None, status: int = 200) -> HttpResponse:
    rows, usage_known = _limit_rows(organization)
    now = timezone.now()
    return _render(request, organization, "dashboard/limits.html", "limits", {
        "limit_rows": rows,
        "usage_known": usage_known,
        "budget_rows": _budget_rows(organization),
        "policy": limit_policy_get(organization=organization),
        "rejections": rejections_by_reason(organization=organization,
                                           start=now - timedelta(hours=24), end=now),
        "changes": limit_changes_for_org(organization=organization)[:CHANGES_SHOWN],
        "limit_form": limit_form or LimitForm(organization=organization),
        "budget_form": budget_form or BudgetForm(organization=organization),
    }, status=status)


@login_required
@require_GET
def limits(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, organization_for_member(request.user, slug))


@login_required
@require_POST
def limit_save(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    form = LimitForm(request.POST, organization=organization)
    if form.is_valid():
        data = form.cleaned_data
        try:
            limit_set(organization=organization, api_key=data["api_key"], model=data["model"],
                      values={name: data[name] for name, _, _ in MEASURES},
                      actor=Actor.of_user(request.user))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Saved the limits. The gateway applies them within "
                                      "seconds.")
            return redirect("dashboard:limits", slug=organization.slug)
    return _page(request, organization, limit_form=form, status=400)


@login_required
@require_POST
def limit_remove(request: HttpRequest, slug: str, limit_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    limit = limit_for_member(organization, limit_id)
    limit_delete(limit=limit, actor=Actor.of_user(request.user))
    messages.success(request, "Removed the limits.")
    return redirect("dashboard:limits", slug=organization.slug)


@login_required
@require_POST
def budget_save(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    form = BudgetForm(request.POST, organization=organization)
    if form.is_valid():
        data = form.cleaned_data
        try:
            budget_set(organization=organization, api_key=data["api_key"],
                       period=data["period"], limit_usd=data["limit_usd"], soft=data["soft"],
                       actor=Actor.of_user(request.user))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Saved the budget.")
            return redirect("dashboard:limits", slug=organization.slug)
    return _page(request, organization, budget_form=form, status=400)


@login_required
@require_POST
def budget_remove(request: HttpRequest, slug: str, budget_id: int) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    budget = budget_for_member(organization, budget_id)
    budget_delete(budget=budget, actor=Actor.of_user(request.user))
    messages.success(request, "Removed the budget.")
    return redirect("dashboard:limits", slug=organization.slug)


@login_required
@require_POST
def policy_save(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    fail_closed = request.POST.get("fail_closed") == "on"
    limit_policy_set(organization=organization, fail_closed=fail_closed,
                     actor=Actor.of_user(request.user))
    messages.success(request, "While the limits store is down, requests now "
                              + ("get 503." if fail_closed else "are served."))
    return redirect("dashboard:limits", slug=organization.slug)
