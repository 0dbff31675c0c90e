"""Plain helpers for the routing tests: providers and routes as the services make them."""

from organizations.models import Organization, Provider
from organizations.services import provider_add
from routing.models import ModelRoute
from routing.services import TargetSpec, route_set

PUBLIC = "https://8.8.8.8/v1"


def make_provider(org: Organization, name: str, **fields) -> Provider:
    values = {"kind": "openai", "base_url": PUBLIC, "api_key": f"sk-{name}-key-0000",
              **fields}
    return provider_add(organization=org, name=name, **values)


def make_route(org: Organization, name: str, *targets: TargetSpec | tuple,
               **fields) -> ModelRoute:
    """Targets as TargetSpecs or (provider or None, model[, weight]) tuples."""
    specs = [t if isinstance(t, TargetSpec) else TargetSpec(*t) for t in targets]
    route, _ = route_set(organization=org, name=name, targets=specs, **fields)
    return route
