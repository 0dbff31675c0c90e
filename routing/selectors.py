"""Reads of model routes, always through the organization, and the snapshot the request
path routes by (routing.table)."""

import hashlib
from fractions import Fraction
from math import lcm

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from analytics.prices import PriceBook
from organizations.models import Organization, Provider
from organizations.selectors import provider_api_key
from routing.errors import RouteNotFound, RoutingPolicyNotFound
from routing.models import ModelRoute, RouteTarget, RoutingPolicy
from routing.table import PolicySnapshot, ProviderConfig, Route, RoutingTable, Target, TierModel


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
    """The organization's routing snapshot, in four queries (providers, routes,
    targets, the routing policy; a fifth, the model table, when there is a policy)
    whatever their number: enabled providers with their keys decrypted, every
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
    policy = RoutingPolicy.objects.filter(organization_id=organization_id).first()
    return RoutingTable(routes=table_routes, default=default,
                        providers={config.name: config for config in providers.values()},
                        policy=policy_snapshot(policy, table_routes) if policy else None)


def routing_policy_get_for_org(*, organization: Organization) -> RoutingPolicy:
    """The organization's routing policy; RoutingPolicyNotFound when it has none."""
    try:
        return RoutingPolicy.objects.get(organization=organization)
    except RoutingPolicy.DoesNotExist:
        raise RoutingPolicyNotFound("This organization has no routing policy") from None


def tier_model(name: str, *, routes: dict[str, Route], prices: PriceBook) -> TierModel:
    """A policy's tier as the request path needs it. `@NAME` is a route of the
    organization: it is priced as its first target's model and can do what all its
    targets can (the narrowest window), since any of them may answer."""
    now = timezone.now()
    if not name.startswith("@"):
        found = prices.capabilities_for(name, now)
        return TierModel(name=name, priced_as=name, context_window=found.context_window,
                         tools=found.tools, json_schema=found.json_schema,
                         images=found.images, price=_unit_price(prices, name))
    route = routes.get(name[1:])
    models = [target.upstream_model for target in route.targets] if route else []
    if not models:
        return TierModel(name=name[1:], priced_as=name[1:])
    each = [prices.capabilities_for(model, now) for model in models]
    # A window unknown for any target is no known limit for the route.
    windows = [c.context_window for c in each if c.context_window is not None]
    return TierModel(
        name=name[1:], priced_as=models[0],
        context_window=min(windows) if len(windows) == len(each) else None,
        tools=all(c.tools for c in each), json_schema=all(c.json_schema for c in each),
        images=all(c.images for c in each), price=_unit_price(prices, models[0]))


def _unit_price(prices: PriceBook, model: str) -> float | None:
    """Input plus output USD per million tokens now; None when unpriced."""
    price = prices.price_for(model, timezone.now())
    return float(price.input_per_million + price.output_per_million) if price else None


def policy_snapshot(policy: RoutingPolicy, routes: dict[str, Route], *,
                    prices: PriceBook | None = None) -> PolicySnapshot:
    """The policy frozen for the request path, its tiers resolved (one query for the
    model table unless `prices` is given)."""
    prices = prices or PriceBook.load()
    names = (policy.simple_model, policy.standard_model, policy.complex_model)
    tiers = tuple(tier_model(name, routes=routes, prices=prices) for name in names)
    targets = [[(t.provider.id, t.upstream_model) for t in routes[name[1:]].targets]
               if name.startswith("@") and name[1:] in routes else [] for name in names]
    answered_by = hashlib.blake2b(repr((tiers, targets)).encode(), digest_size=8).hexdigest()
    return PolicySnapshot(mode=policy.mode, tiers=tiers,
                          simple_below=policy.simple_below, complex_from=policy.complex_from,
                          apply_to=frozenset(policy.apply_to), generation=policy.generation,
                          answered_by=answered_by,
                          apply_to_prices={model: _unit_price(prices, model)
                                           for model in policy.apply_to})
