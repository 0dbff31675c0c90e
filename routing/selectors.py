"""Reads of model routes, always through the organization, and the snapshot the request
path routes by (routing.table)."""

from fractions import Fraction
from math import lcm

from django.db.models import Prefetch, QuerySet

from organizations.models import Organization, Provider
from organizations.selectors import provider_api_key
from routing.errors import RouteNotFound
from routing.models import ModelRoute, RouteTarget
from routing.table import ProviderConfig, Route, RoutingTable, Target


def routes_for_org(*, organization: Organization) -> QuerySet[ModelRoute]:
    """The organization's routes by name, their targets (and providers) loaded."""
    targets = RouteTarget.objects.select_related("provider").order_by("priority", "pk")
    return (ModelRoute.objects.filter(organization=organization).order_by("name")
            .prefetch_related(Prefetch("targets", queryset=targets)))


def route_get_for_org(*, organization: Organization, route_id: int) -> ModelRoute:
    """The route `route_id` of this organization, targets loaded; RouteNotFound for
    anyone else's."""
    try:
        return routes_for_org(organization=organization).get(pk=route_id)
    except ModelRoute.DoesNotExist:
        raise RouteNotFound("No such route") from None


# One flattened target while a route is expanded: where it sorts (priorities from the
# route down through its aliases), its share of the route's traffic, and what it is.
_Leaf = tuple[tuple[int, ...], Fraction, ProviderConfig, str]


class _Flattener:
    """Expands aliases: an alias target is replaced by the targets of the route it
    names, which take its place in the order and split its share by their weights."""

    def __init__(self, targets: dict[str, list[RouteTarget]],
                 providers: dict[int, ProviderConfig]) -> None:
        self.targets = targets
        self.providers = providers
        self.done: dict[str, list[_Leaf]] = {}
        # The weights of each route's targets that lead somewhere.
        self.totals: dict[str, int] = {}

    def leaves(self, name: str, path: frozenset[str] = frozenset()) -> list[_Leaf]:
        if name in self.done:
            return self.done[name]
        usable: list[tuple[RouteTarget, list[_Leaf]]] = []
        for row in self.targets.get(name, ()):
            if row.provider_id is None:
                # Loops are refused at save; an alias of a deleted route names nothing.
                if row.upstream_model in path | {name}:
                    continue
                inner = self.leaves(row.upstream_model, path | {name})
            else:
                provider = self.providers.get(row.provider_id)  # None: disabled
                inner = [((), Fraction(1), provider, row.upstream_model)] if provider else []
            if inner:
                usable.append((row, inner))
        total = sum(row.weight for row, _ in usable)
        found = [((row.priority, *order), Fraction(row.weight, total) * share, provider, model)
                 for row, inner in usable for order, share, provider, model in inner]
        self.done[name], self.totals[name] = found, total
        return found


def _targets(leaves: list[_Leaf], total_weight: int) -> tuple[Target, ...]:
    """Leaves as Targets: priorities as dense ranks of their order (ties kept), the same
    target reached twice counted once, weights integers in the exact proportions (the
    configured weights themselves when there is no alias)."""
    depth = max((len(order) for order, *_ in leaves), default=0)
    merged: dict[tuple[int, str], list] = {}
    for order, share, provider, model in leaves:
        padded = order + (0,) * (depth - len(order))
        entry = merged.get((provider.id, model))
        if entry is None:
            merged[(provider.id, model)] = [padded, share, provider, model]
        else:
            entry[0], entry[1] = min(entry[0], padded), entry[1] + share
    entries = sorted(merged.values(), key=lambda entry: entry[0])  # stable
    ranks = {order: rank for rank, order in enumerate(sorted({e[0] for e in entries}))}
    scaled = [entry[1] * total_weight for entry in entries]
    scale = lcm(*(share.denominator for share in scaled)) if scaled else 1
    return tuple(
        Target(provider=provider, upstream_model=model, weight=int(share * scale),
               priority=ranks[order])
        for (order, _, provider, model), share in zip(entries, scaled, strict=True)
    )


def routing_table_for_org(*, organization_id: int) -> RoutingTable:
    """The organization's routing snapshot, in three queries (providers, routes,
    targets) whatever their number: enabled providers with their keys decrypted, every
    route with its enabled targets of enabled providers, aliases flattened, sorted by
    priority. A route left with no target stays in the table with `targets == ()`, so
    the request path answers that the route is unavailable instead of quietly sending
    the model to the default provider.

    Raises CredentialDecryptionError when a provider's key cannot be decrypted."""
    rows = list(Provider.objects.filter(organization_id=organization_id, enabled=True))
    providers = {
        row.pk: ProviderConfig(id=row.pk, name=row.name, kind=row.kind,
                               base_url=row.base_url,
                               api_key=provider_api_key(credential=row),
                               api_version=row.api_version)
        for row in rows
    }
    default = next((providers[row.pk] for row in rows if row.is_default), None)
    routes = list(ModelRoute.objects.filter(organization_id=organization_id))
    names = {route.pk: route.name for route in routes}
    targets: dict[str, list[RouteTarget]] = {}
    for row in RouteTarget.objects.filter(route__organization_id=organization_id,
                                          enabled=True).order_by("priority", "pk"):
        targets.setdefault(names[row.route_id], []).append(row)
    flattener = _Flattener(targets, providers)
    table_routes = {}
    for route in routes:
        leaves = flattener.leaves(route.name)
        table_routes[route.name] = Route(
            name=route.name, targets=_targets(leaves, flattener.totals[route.name]),
            strategy=route.strategy,
            retry_on=frozenset(route.retry_on), explicit=True)
    return RoutingTable(routes=table_routes, default=default,
                        providers={config.name: config for config in providers.values()})
