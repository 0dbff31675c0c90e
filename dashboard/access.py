"""The one way a dashboard view reaches an organization: through the user's membership.

Every page and action calls `organization_for_member` first; nothing in a view looks an
organization up any other way, so another tenant's slug (or an object id under it) is a
404 and a plain member's attempt to manage is a 403. The selectors below raise the
organizations app's own errors; these accessors are where they become HTTP answers.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from alerts.errors import AlertChannelNotFound, AlertRuleNotFound
from alerts.models import AlertChannel, AlertRule
from alerts.selectors import alert_channel_get_for_org, alert_rule_get_for_org
from organizations import selectors
from organizations.errors import ApiKeyNotFound, OrganizationNotFound, ProviderNotFound
from organizations.models import ApiKey, Organization, Provider
from ratelimit.errors import BudgetNotFound, LimitNotFound
from ratelimit.models import Budget, Limit
from ratelimit.selectors import budget_get_for_org, limit_get_for_org
from routing.errors import RouteNotFound
from routing.models import ModelRoute
from routing.selectors import route_get_for_org


def organization_for_member(
    user: AbstractBaseUser, slug: str, *, manage: bool = False
) -> Organization:
    """The organization `slug` if `user` belongs to it, with the user's role as
    `member_role`; 404 for non-members (nobody learns which slugs exist), 403 when
    `manage` is asked and the user is a plain member."""
    try:
        organization = selectors.organization_for_member(user=user, slug=slug)
    except OrganizationNotFound as exc:
        raise Http404(str(exc)) from exc
    if manage and not can_manage(organization):
        raise PermissionDenied("Only an owner or admin can do this")
    return organization


def api_key_for_member(organization: Organization, key_id: int) -> ApiKey:
    """The key `key_id` of an organization loaded by organization_for_member; 404 for
    any other organization's."""
    try:
        return selectors.api_key_get_for_org(organization=organization, key_id=key_id)
    except ApiKeyNotFound as exc:
        raise Http404(str(exc)) from exc


def provider_for_member(organization: Organization, provider_id: int) -> Provider:
    """The provider `provider_id` of an organization loaded by organization_for_member;
    404 for any other organization's."""
    try:
        return selectors.provider_get_for_org(organization=organization,
                                              provider_id=provider_id)
    except ProviderNotFound as exc:
        raise Http404(str(exc)) from exc


def route_for_member(organization: Organization, route_id: int) -> ModelRoute:
    """The route `route_id` of an organization loaded by organization_for_member; 404
    for any other organization's."""
    try:
        return route_get_for_org(organization=organization, route_id=route_id)
    except RouteNotFound as exc:
        raise Http404(str(exc)) from exc


def can_manage(organization: Organization) -> bool:
    """True when the member who loaded it (organization_for_member) is owner or admin."""
    return selectors.member_can_manage(organization=organization)


def limit_for_member(organization: Organization, limit_id: int) -> Limit:
    """The limits `limit_id` of an organization loaded by organization_for_member; 404
    for any other organization's."""
    try:
        return limit_get_for_org(organization=organization, limit_id=limit_id)
    except LimitNotFound as exc:
        raise Http404(str(exc)) from exc


def budget_for_member(organization: Organization, budget_id: int) -> Budget:
    """The budget `budget_id` of an organization loaded by organization_for_member; 404
    for any other organization's."""
    try:
        return budget_get_for_org(organization=organization, budget_id=budget_id)
    except BudgetNotFound as exc:
        raise Http404(str(exc)) from exc


def alert_rule_for_member(organization: Organization, rule_id: int) -> AlertRule:
    """The alert rule `rule_id` of an organization loaded by organization_for_member; 404
    for any other organization's."""
    try:
        return alert_rule_get_for_org(organization=organization, rule_id=rule_id)
    except AlertRuleNotFound as exc:
        raise Http404(str(exc)) from exc


def alert_channel_for_member(organization: Organization, channel_id: int) -> AlertChannel:
    """The alert channel `channel_id` of an organization loaded by
    organization_for_member; 404 for any other organization's."""
    try:
        return alert_channel_get_for_org(organization=organization, channel_id=channel_id)
    except AlertChannelNotFound as exc:
        raise Http404(str(exc)) from exc
