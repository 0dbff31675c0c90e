"""Writes of model routes, all validated here: whatever writes a route (API, dashboard,
admin, set_route) comes through route_set / route_update, so the rules hold everywhere.

A route maps the model name a client asks for to targets tried by its strategy. A
target is a provider of the organization and the model that provider is asked for; or,
with no provider, an alias: its `upstream_model` names another route of the
organization, whose targets stand in for it (flattened by routing.selectors). A loop of
aliases is refused here, so the snapshot never meets one.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from organizations.errors import ProviderNotFound
from organizations.models import Organization, Provider
from organizations.selectors import provider_get_by_name
from organizations.services import Actor, audit_record
from routing.errors import RouteInUse
from routing.models import ModelRoute, RouteTarget, RoutingPolicy
from routing.table import RETRY_ON, STRATEGIES

MAX_WEIGHT = 1_000_000
MAX_PRIORITY = 1_000_000
_MODEL_NAME = re.compile(r"\S{1,200}")


@dataclass(frozen=True)
class TargetSpec:
    provider: Provider | None  # None: an alias, `upstream_model` names another route
    upstream_model: str
    weight: int = 1
    priority: int | None = None  # None: its place in the list (first is 0)
    enabled: bool = True


def _check_name(what: str, name: str) -> None:
    if not _MODEL_NAME.fullmatch(name):
        raise ValidationError(f"Invalid {what} {name!r}: 1 to 200 characters, no spaces")


def _alias_path(edges: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A path of aliases from `start` to `goal`, if there is one."""
    stack, seen = [[start]], {start}
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            return path
        for nxt in sorted(edges.get(path[-1], ())):
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*path, nxt])
    return None


def route_validate(
    *,
    organization: Organization,
    name: str,
    targets: Sequence[TargetSpec],
    strategy: str = ModelRoute.Strategy.PRIORITY,
    retry_on: Iterable[str] | None = None,
    route: ModelRoute | None = None,
) -> None:
    """Raise ValidationError unless this is a valid route of the organization (`route`:
    the one being changed, if any; otherwise the route called `name`, if any), or
    RouteInUse when renaming a route that others alias."""
    _check_name("route name", name)
    if strategy not in STRATEGIES:
        raise ValidationError(f"Unknown strategy {strategy!r}: one of " + ", ".join(STRATEGIES))
    unknown = sorted(set(retry_on or ()) - RETRY_ON)
    if unknown:
        raise ValidationError(f"Unknown retry_on {', '.join(unknown)}: any of "
                              + ", ".join(sorted(RETRY_ON)))
    if not targets:
        raise ValidationError("A route needs at least one target")
    routes = dict(ModelRoute.objects.filter(organization=organization)
                  .values_list("name", "pk"))
    pk = route.pk if route is not None else routes.get(name)
    if route is not None and name != route.name:
        if name in routes:
            raise ValidationError(f"This organization already has a route named {name!r}")
        if RouteTarget.objects.filter(route__organization=organization, provider=None,
                                      upstream_model=route.name).exists():
            raise RouteInUse(f"Route {route.name!r} is aliased by other routes: "
                             "it cannot be renamed")
        _refuse_if_a_tier(organization_id=organization.pk, name=route.name,
                          doing="renamed")
    seen: set[tuple[int | None, str]] = set()
    for target in targets:
        _check_name("upstream model", target.upstream_model)
        if not 1 <= target.weight <= MAX_WEIGHT:
            raise ValidationError(f"A target's weight must be between 1 and {MAX_WEIGHT} "
                                  f"(got {target.weight})")
        if target.priority is not None and not 0 <= target.priority <= MAX_PRIORITY:
            raise ValidationError(f"A target's priority must be between 0 and "
                                  f"{MAX_PRIORITY} (got {target.priority})")
        provider = target.provider
        if provider is not None and provider.organization_id != organization.pk:
            raise ValidationError(f"Provider {provider.name!r} is not one of this "
                                  "organization's providers")
        if provider is None and (target.upstream_model == name
                                 or routes.get(target.upstream_model, -1) == pk):
            raise ValidationError(f"Route {name!r} cannot be an alias of itself")
        if provider is None and target.upstream_model not in routes:
            raise ValidationError(f"A target without a provider is an alias, and this "
                                  f"organization has no route {target.upstream_model!r}")
        identity = (provider.pk if provider else None, target.upstream_model)
        if identity in seen:
            raise ValidationError(f"Target {_describe(target)} is listed twice")
        seen.add(identity)
    _refuse_alias_loop(organization=organization, name=name, pk=pk, targets=targets)


def _describe(target: TargetSpec) -> str:
    if target.provider is None:
        return f"@{target.upstream_model}"
    return f"{target.provider.name}:{target.upstream_model}"


def _refuse_alias_loop(*, organization: Organization, name: str, pk: int | None,
                       targets: Sequence[TargetSpec]) -> None:
    edges: dict[str, set[str]] = {}
    for route_name, alias in RouteTarget.objects.filter(
            route__organization=organization, provider=None).exclude(route_id=pk).values_list(
            "route__name", "upstream_model"):
        edges.setdefault(route_name, set()).add(alias)
    edges[name] = {t.upstream_model for t in targets if t.provider is None}
    for alias in sorted(edges[name]):
        path = _alias_path(edges, alias, name)
        if path is not None:
            raise ValidationError("Aliases would loop: " + " -> ".join([name, *path]))


def _audited(route: ModelRoute | None) -> dict | None:
    """A route as its audit entries show it: the targets in the set_route notation."""
    if route is None:
        return None
    return {"name": route.name, "strategy": route.strategy, "retry_on": list(route.retry_on),
            "targets": [route_target_text(target) for target in
                        route.targets.select_related("provider").order_by("priority", "pk")]}


def _write(*, organization: Organization, route: ModelRoute | None, name: str,
           targets: Sequence[TargetSpec], strategy: str,
           retry_on: Iterable[str] | None, actor: Actor | None) -> tuple[ModelRoute, bool]:
    retry = sorted(RETRY_ON if retry_on is None else set(retry_on))
    with transaction.atomic():
        # One route write at a time per organization: two writes could otherwise each
        # pass the loop check and together make a loop.
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if route is None:
            route = ModelRoute.objects.filter(organization=organization, name=name).first()
        route_validate(organization=organization, name=name, targets=targets,
                       strategy=strategy, retry_on=retry, route=route)
        created = route is None
        before = _audited(route)
        if created:
            route = ModelRoute.objects.create(organization=organization, name=name,
                                              strategy=strategy, retry_on=retry)
        else:
            route.name, route.strategy, route.retry_on = name, strategy, retry
            route.save(update_fields=["name", "strategy", "retry_on", "updated_at"])
            route.targets.all().delete()
        RouteTarget.objects.bulk_create(
            RouteTarget(route=route, provider=target.provider,
                        upstream_model=target.upstream_model, weight=target.weight,
                        priority=index if target.priority is None else target.priority,
                        enabled=target.enabled)
            for index, target in enumerate(targets)
        )
        audit_record(organization=organization, actor=actor,
                     action="route.create" if created else "route.update", target=route,
                     before=before, after=_audited(route))
    return route, created


def route_set(
    *,
    organization: Organization,
    name: str,
    targets: Sequence[TargetSpec],
    strategy: str = ModelRoute.Strategy.PRIORITY,
    retry_on: Iterable[str] | None = None,
    actor: Actor | None = None,
) -> tuple[ModelRoute, bool]:
    """Create the route `name`, or replace its strategy, retry_on and targets; returns
    (route, created). `retry_on=None` means every failure kind (table.RETRY_ON).

    Raises ValidationError on an invalid route (see route_validate)."""
    return _write(organization=organization, route=None, name=name, targets=targets,
                  strategy=strategy, retry_on=retry_on, actor=actor)


def route_update(
    *,
    route: ModelRoute,
    name: str,
    targets: Sequence[TargetSpec],
    strategy: str = ModelRoute.Strategy.PRIORITY,
    retry_on: Iterable[str] | None = None,
    actor: Actor | None = None,
) -> ModelRoute:
    """Replace everything about `route`, its name included.

    Raises ValidationError, or RouteInUse when renaming a route that others alias."""
    updated, _ = _write(organization=route.organization, route=route, name=name,
                        targets=targets, strategy=strategy, retry_on=retry_on, actor=actor)
    return updated


def _refuse_if_a_tier(*, organization_id: int, name: str, doing: str) -> None:
    """A route a routing policy's tier names (`@NAME`) is not renamed or deleted from
    under it: the tier would name nothing."""
    tier = f"@{name}"
    if RoutingPolicy.objects.filter(organization_id=organization_id).filter(
            Q(simple_model=tier) | Q(standard_model=tier) | Q(complex_model=tier)).exists():
        raise RouteInUse(f"Route {name!r} is a tier of the routing policy: it cannot be "
                         f"{doing}; change the policy first")


def route_delete(*, route: ModelRoute, actor: Actor | None = None) -> None:
    """Delete the route. Raises RouteInUse while another route is an alias of it."""
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=route.organization_id).first()
        users = sorted(set(RouteTarget.objects.filter(
            route__organization_id=route.organization_id, provider=None,
            upstream_model=route.name).exclude(route=route).values_list("route__name",
                                                                        flat=True)))
        if users:
            raise RouteInUse(f"Route {route.name!r} is aliased by "
                             + ", ".join(repr(user) for user in users)
                             + ": change those first")
        _refuse_if_a_tier(organization_id=route.organization_id, name=route.name,
                          doing="deleted")
        audit_record(organization=route.organization, actor=actor, action="route.delete",
                     target=route, before=_audited(route))
        route.delete()


_TARGET_TEXT = re.compile(r"(?P<disabled>#\s*)?(?:(?P<alias>@)|(?P<provider>[^:@#\s]+):)"
                          r"(?P<model>\S+?)(?::(?P<weight>\d+))?")


def route_target_text(target: RouteTarget) -> str:
    """A target in the notation route_targets_parse reads."""
    where = "@" if target.provider_id is None else f"{target.provider.name}:"
    return f"{'' if target.enabled else '#'}{where}{target.upstream_model}:{target.weight}"


def route_targets_parse(*, organization: Organization,
                        texts: Sequence[str]) -> list[TargetSpec]:
    """Targets written as `PROVIDER:UPSTREAM_MODEL[:WEIGHT]`, or `@ROUTE[:WEIGHT]` for an
    alias, in priority order (what set_route and the dashboard take). A last `:N` of
    digits only is the weight, so a model may contain colons (`ollama:llama3:8b`); a
    leading `#` keeps the target, disabled.

    Raises ValidationError on a malformed text or an unknown provider."""
    specs = []
    for text in texts:
        match = _TARGET_TEXT.fullmatch(text.strip())
        if match is None:
            raise ValidationError(f"Invalid target {text!r}: write PROVIDER:MODEL[:WEIGHT] "
                                  "or @ROUTE[:WEIGHT]")
        provider = None
        if match["provider"] is not None:
            try:
                provider = provider_get_by_name(organization=organization,
                                                name=match["provider"])
            except ProviderNotFound as exc:
                raise ValidationError(str(exc)) from None
        weight = int(match["weight"]) if match["weight"] is not None else 1
        specs.append(TargetSpec(provider=provider, upstream_model=match["model"],
                                weight=weight, enabled=match["disabled"] is None))
    return specs
