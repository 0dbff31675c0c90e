"""The one way a dashboard view reaches an organization: through the user's membership.

Every page and action calls `organization_for_member` first; nothing in a view looks an
organization up any other way, so another tenant's slug (or an object id under it) is a
404 and a plain member's attempt to manage is a 403.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import Http404

from organizations.models import Membership, Organization

MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


def organization_for_member(
    user: AbstractBaseUser, slug: str, *, manage: bool = False
) -> Organization:
    """The organization `slug` if `user` belongs to it, with the user's role as
    `member_role`; 404 for non-members (nobody learns which slugs exist), 403 when
    `manage` is asked and the user is a plain member."""
    organization = (
        Organization.objects.filter(slug=slug, memberships__user=user)
        .annotate(member_role=F("memberships__role"))
        .first()
    )
    if organization is None:
        raise Http404("No such organization")
    if manage and not can_manage(organization):
        raise PermissionDenied("Only an owner or admin can do this")
    return organization


def can_manage(organization: Organization) -> bool:
    """True when the member who loaded it (organization_for_member) is owner or admin."""
    return getattr(organization, "member_role", None) in MANAGER_ROLES
