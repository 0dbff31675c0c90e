"""The Audit page: who changed the organization's keys, providers, routes and rules, and
from what to what. Owners and admins only: it names people and what they did. Limits
and budgets keep their own trail, on the Limits page."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from dashboard.access import organization_for_member
from dashboard.views import _render
from organizations.selectors import audit_entries_for_org

ENTRIES_SHOWN = 200


def _changes(before: dict | None, after: dict | None) -> list[tuple[str, object, object]]:
    """(field, before, after) for each field that differs (all of them on a create or
    a delete)."""
    before, after = before or {}, after or {}
    return [(field, before.get(field), after.get(field))
            for field in dict.fromkeys([*before, *after])
            if before.get(field) != after.get(field)]


@login_required
@require_GET
def audit(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_for_member(request.user, slug, manage=True)
    entries = audit_entries_for_org(organization=organization)[:ENTRIES_SHOWN]
    return _render(request, organization, "dashboard/audit.html", "audit", {
        "entries": [(entry, _changes(entry.before, entry.after)) for entry in entries],
        "shown": ENTRIES_SHOWN,
    })
