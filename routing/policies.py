"""Writes of routing policies (smart routing by task complexity), all validated here:
the API, the dashboard, the admin and set_routing_policy come through
routing_policy_set, so the rules hold everywhere. Kept apart from routing.services
(the routes' writes) because a policy is its own object with its own rules.
"""

import math
import re
from collections.abc import Sequence

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from analytics.prices import PriceBook
from organizations.models import Organization
from organizations.services import Actor, audit_record, audit_values
from routing import complexity
from routing.errors import RoutingPolicyInvalid
from routing.models import ModelRoute, RoutingPolicy
from routing.table import AUTO, TIERS

FIELDS = ["mode", "simple_model", "standard_model", "complex_model", "simple_below",
          "complex_from", "apply_to"]
MAX_APPLY_TO = 100
# As a route's name, without control characters (a NUL cannot be stored in JSON columns).
_MODEL_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")


def _check_tier(*, tier: str, name: str, routes: set[str], prices: PriceBook) -> None:
    param = f"{tier}_model"
    if name == AUTO or name == "@" + AUTO:
        raise RoutingPolicyInvalid(f"The {tier} tier must name a model, not {AUTO!r}",
                                   param=param)
    if name.startswith("@"):
        if name[1:] not in routes:
            # The same words whether the route is another organization's or nobody's.
            raise RoutingPolicyInvalid(f"The {tier} tier names {name!r}, which is not a "
                                       "route of this organization", param=param)
        return
    if not _MODEL_NAME.fullmatch(name):
        raise RoutingPolicyInvalid(f"The {tier} tier's model {name!r} is not a model name "
                                   "(1 to 200 characters, no spaces)", param=param)
    if not prices.knows(name) and name not in routes:
        raise RoutingPolicyInvalid(
            f"The {tier} tier names {name!r}, which is neither in the model table (add its "
            "price in the admin) nor a route of this organization (write @ROUTE for a "
            "route)", param=param)


def routing_policy_validate(*, organization: Organization, mode: str,
                            models: Sequence[str], simple_below: float,
                            complex_from: float, apply_to: Sequence[str]) -> None:
    """Raise RoutingPolicyInvalid unless this is a valid policy of the organization:
    `models` the simple, standard and complex tiers' models."""
    if mode not in RoutingPolicy.Mode.values:
        raise RoutingPolicyInvalid(f"Unknown mode {mode!r}: one of "
                                   + ", ".join(RoutingPolicy.Mode.values), param="mode")
    routes = set(ModelRoute.objects.filter(organization=organization)
                 .values_list("name", flat=True))
    prices = PriceBook.load()
    for tier, name in zip(TIERS, models, strict=True):
        _check_tier(tier=tier, name=name, routes=routes, prices=prices)
    for param, value in (("simple_below", simple_below), ("complex_from", complex_from)):
        if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
            raise RoutingPolicyInvalid(f"{param} must be a number between 0 and 1 "
                                       f"(got {value!r})", param=param)
    if simple_below > complex_from:
        raise RoutingPolicyInvalid(
            f"The thresholds are out of order: simple_below ({simple_below}) must not be "
            f"above complex_from ({complex_from})", param="simple_below")
    if len(apply_to) > MAX_APPLY_TO:
        raise RoutingPolicyInvalid(f"apply_to lists at most {MAX_APPLY_TO} models",
                                   param="apply_to")
    for name in apply_to:
        if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name) or name == AUTO:
            raise RoutingPolicyInvalid(f"apply_to: {name!r} is not a model name ('auto' is "
                                       "always routed)", param="apply_to")


def routing_policy_set(
    *,
    organization: Organization,
    mode: str | None = None,
    simple_model: str | None = None,
    standard_model: str | None = None,
    complex_model: str | None = None,
    simple_below: float | None = None,
    complex_from: float | None = None,
    apply_to: Sequence[str] | None = None,
    actor: Actor | str | None = None,
) -> tuple[RoutingPolicy, bool]:
    """Create the organization's routing policy or change what is given (None keeps
    the current value; a new policy needs its three tiers and takes the classifier's
    default thresholds and mode off). Returns (policy, changed). A change bumps the
    policy's generation, so routed requests no longer meet answers of the old policy
    in the cache, and is audited.

    Raises RoutingPolicyInvalid, its `param` naming the field at fault."""
    with transaction.atomic():
        # One policy write at a time per organization (routes too take this lock, so a
        # route renamed meanwhile cannot slip past the tier check).
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        policy = RoutingPolicy.objects.filter(organization=organization).first()
        before = audit_values(policy, FIELDS)
        current = before or {"mode": RoutingPolicy.Mode.OFF,
                             "simple_below": complexity.SIMPLE_BELOW,
                             "complex_from": complexity.COMPLEX_FROM, "apply_to": []}
        given = {"mode": mode, "simple_model": simple_model,
                 "standard_model": standard_model, "complex_model": complex_model,
                 "simple_below": simple_below, "complex_from": complex_from,
                 "apply_to": None if apply_to is None else list(dict.fromkeys(apply_to))}
        values = {field: current.get(field) if given[field] is None else given[field]
                  for field in FIELDS}
        for tier in TIERS:
            if not values[f"{tier}_model"]:
                raise RoutingPolicyInvalid(f"A routing policy needs a {tier} tier model",
                                           param=f"{tier}_model")
        routing_policy_validate(
            organization=organization, mode=values["mode"],
            models=[values[f"{tier}_model"] for tier in TIERS],
            simple_below=values["simple_below"], complex_from=values["complex_from"],
            apply_to=values["apply_to"])
        if before == values:
            return policy, False
        if policy is None:
            policy = RoutingPolicy.objects.create(organization=organization, **values)
        else:
            RoutingPolicy.objects.filter(pk=policy.pk).update(
                **values, generation=F("generation") + 1, updated_at=timezone.now())
            policy.refresh_from_db()
        audit_record(organization=organization, actor=actor,
                     action="routing_policy.create" if before is None
                     else "routing_policy.update",
                     target=policy, before=before, after=audit_values(policy, FIELDS))
    return policy, True
