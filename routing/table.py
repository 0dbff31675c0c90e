"""What the request path knows of an organization's providers and routes: a frozen
snapshot, built from the database off the event loop and kept with the caller's
credentials for a few seconds (proxy/auth.py), so choosing a target costs no query.

Built by `routing.selectors.routing_table_for_org`; read by the request path.
"""

from dataclasses import dataclass, field

STRATEGIES = ("priority", "weighted", "latency")
# What moves a request to the next target, by default all of them; a route may narrow it.
RETRY_ON = frozenset({"connect", "timeout", "429", "5xx"})


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One upstream of the organization, its key decrypted."""

    id: int
    name: str
    kind: str  # "openai" (and every OpenAI-compatible API), "azure", "anthropic"
    base_url: str
    api_key: str
    api_version: str = ""  # Azure OpenAI's api-version; blank for the others


@dataclass(frozen=True, slots=True)
class Target:
    provider: ProviderConfig
    upstream_model: str  # the model name the provider is asked for
    weight: int = 1
    priority: int = 0  # lower first

    @property
    def key(self) -> str:
        """Names this target in breaker and latency state (shared across processes)."""
        return f"{self.provider.id}:{self.upstream_model}"


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the model name a client asks for: a real model or an alias
    targets: tuple[Target, ...]  # enabled targets only, aliases already flattened
    strategy: str = "priority"
    retry_on: frozenset[str] = RETRY_ON
    # False for the implicit route of a model with no route of its own.
    explicit: bool = True


@dataclass(frozen=True, slots=True)
class TierModel:
    """One tier of a routing policy as the request path needs it: the model name sent
    on (a model, or the name of a route), the model it is priced as (a route's first
    target's upstream model), and what it can do (the model table's capabilities; for
    a route, what every one of its targets can do)."""

    name: str
    priced_as: str
    context_window: int | None = None  # None: not known, so not a limit
    tools: bool = False
    json_schema: bool = False
    images: bool = False
    # Input plus output USD per million tokens (the model table's); None: unpriced.
    price: float | None = None


# The value of a policy's tiers, in order, cheapest first.
TIERS = ("simple", "standard", "complex")


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """The organization's routing policy (routing.models.RoutingPolicy), frozen."""

    mode: str  # "off", "shadow", "on"
    tiers: tuple[TierModel, TierModel, TierModel]  # simple, standard, complex
    simple_below: float
    complex_from: float
    apply_to: frozenset[str] = frozenset()
    generation: int = 1
    # What answers each tier (a route's targets, the models' capabilities and prices),
    # digested: part of a routed request's cache key with the generation, so that an
    # edit of a tier's route or model starts new entries as a policy change does.
    answered_by: str = ""
    # The apply-to models' prices (as TierModel.price): a request for one of them only
    # goes to a tier known to be cheaper.
    apply_to_prices: dict[str, float | None] = field(default_factory=dict)

    def applies_to(self, model: str) -> bool:
        return model == AUTO or model in self.apply_to


# The model name that asks the gateway to choose.
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    routes: dict[str, Route] = field(default_factory=dict)
    default: ProviderConfig | None = None
    # Every enabled provider, by name, for /v1/models and explicit lookups.
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    # Smart routing; None: the organization has no policy.
    policy: PolicySnapshot | None = None

    def route_for(self, model: str) -> Route | None:
        """The route for `model`: its own, or else the default provider asked for the
        model as named (today's behaviour with no routes). None: nowhere to send it."""
        route = self.routes.get(model)
        if route is not None:
            return route
        if self.default is None:
            return None
        return Route(name=model, targets=(Target(self.default, model),), explicit=False)
