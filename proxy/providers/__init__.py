from proxy.providers.base import Provider, UpstreamError, UpstreamResponse
from proxy.providers.openai import OpenAIProvider

_PROVIDERS: dict[str, type[Provider]] = {"openai": OpenAIProvider}


def provider_for(kind: str) -> type[Provider]:
    return _PROVIDERS[kind]


__all__ = ["Provider", "UpstreamError", "UpstreamResponse", "provider_for"]
