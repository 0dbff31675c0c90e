"""Routes for the live gateway tests: providers of an organization on real upstreams
(the fake, a failing one, a closed port) and routes over them, made as the services
make them; and reading what the gateway said about the way a request went."""

import secrets

import httpx

from fakeupstream.testing import free_port
from organizations.models import Organization, Provider
from organizations.services import provider_add
from routing.services import TargetSpec, route_set


def add_provider(org: Organization, name: str, api_base: str, *,
                 kind: str = "openai") -> Provider:
    """A provider with a key of its own, so the fake upstream counts its calls apart."""
    return provider_add(organization=org, name=name, kind=kind, base_url=api_base,
                        api_key=f"sk-{name}-{secrets.token_hex(4)}")


def provider_key(provider: Provider) -> str:
    from organizations import crypto

    return crypto.decrypt(provider.api_key_encrypted)


def closed_port_base() -> str:
    """An address nothing listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


def set_route(org: Organization, name: str, *targets: tuple, strategy: str = "priority",
              retry_on=None) -> None:
    """Targets as (provider, upstream_model[, weight])."""
    route_set(organization=org, name=name, strategy=strategy, retry_on=retry_on,
              targets=[TargetSpec(*target) for target in targets])


def chat(gateway_url: str, raw_key: str, model: str, content: str, *, stream: bool = False,
         headers: dict | None = None, timeout: float = 20) -> httpx.Response:
    """One chat request as plain HTTP (a stream read to its end)."""
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return httpx.post(f"{gateway_url}/v1/chat/completions", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {raw_key}", **(headers or {})})


def way(response: httpx.Response) -> tuple[str | None, str | None, str | None, str | None]:
    """(X-Cognitude-Provider, -Model, -Attempts, -Fallback)."""
    h = response.headers
    return (h.get("x-cognitude-provider"), h.get("x-cognitude-model"),
            h.get("x-cognitude-attempts"), h.get("x-cognitude-fallback"))
