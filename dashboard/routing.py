"""The Smart routing page: the organization's routing policy, and per tier what it did
(requests, spend, the money routing saved next to the cache's, and the feedback on the
answers, so a downgrade that hurts shows). Every member sees it; owners and admins
change the policy (through routing.policies, audited as themselves)."""

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from analytics.selectors import routing_by_tier
from dashboard.access import organization_for_member
from dashboard.periods import period_for
from dashboard.views import _periods, _render
from organizations.models import Organization
from organizations.services import Actor
from routing import complexity
from routing.errors import RoutingPolicyInvalid
from routing.models import RoutingPolicy
from routing.policies import routing_policy_set


class RoutingPolicyForm(forms.Form):
    mode = forms.ChoiceField(choices=RoutingPolicy.Mode.choices)
    simple_model = forms.CharField(max_length=201, label="Simple tier",
                                   help_text="A model of the model table, or @ROUTE.")
    standard_model = forms.CharField(max_length=201, label="Standard tier")
    complex_model = forms.CharField(max_length=201, label="Complex tier")
    simple_below = forms.FloatField(label="Simple below", min_value=0, max_value=1,
                                    initial=complexity.SIMPLE_BELOW)
    complex_from = forms.FloatField(label="Complex from", min_value=0, max_value=1,
                                    initial=complexity.COMPLEX_FROM)
    apply_to = forms.CharField(required=False, label="Also for",
                               help_text="Models whose requests may go down a tier, "
                                         "comma-separated (auto always is routed).")

    def clean_apply_to(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["apply_to"].split(",")
                if name.strip()]


def _initial(policy: RoutingPolicy | None) -> dict | None:
    if policy is None:
        return None
    return {"mode": policy.mode, "simple_model": policy.simple_model,
            "standard_model": policy.standard_model, "complex_model": policy.complex_model,
            "simple_below": policy.simple_below, "complex_from": policy.complex_from,
            "apply_to": ", ".join(policy.apply_to)}


def _page(request: HttpRequest, organization: Organization, *, form=None,
          status: int = 200) -> HttpResponse:
    policy = RoutingPolicy.objects.filter(organization=organization).first()
    period = period_for(request.GET.get("period"))
    tiers = routing_by_tier(organization=organization, start=period.start, end=period.end)
    applied = [row for row in tiers if row["mode"] == "on"]
    return _render(request, organization, "dashboard/routing.html", "routing", {
        "policy": policy,
        "form": form or RoutingPolicyForm(initial=_initial(policy)),
        "period": period,
        "periods": _periods(period),
        "tiers": tiers,
        "routing_saved": sum((row["routing_saved"] for row in applied), Decimal(0)),
        "cache_saved": sum((row["saved"] for row in applied), Decimal(0)),
        "shadow_saving": sum((row["routing_saved"] for row in tiers if row["mode"] != "on"),
                             Decimal(0)),
    }, status=status)


@login_required
@require_GET
def routing(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, organization_for_member(request.user, slug))


@login_required
@require_POST
def routing_policy_save(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    form = RoutingPolicyForm(request.POST)
    if form.is_valid():
        try:
            routing_policy_set(organization=organization, actor=Actor.of_user(request.user),
                               **form.cleaned_data)
        except RoutingPolicyInvalid as exc:
            form.add_error(exc.param if exc.param in form.fields else None, str(exc))
        else:
            messages.success(request, "Saved the routing policy. The gateway applies it "
                                      "within seconds.")
            return redirect("dashboard:routing", slug=organization.slug)
    return _page(request, organization, form=form, status=400)
