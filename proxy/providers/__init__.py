from proxy.providers.anthropic import AnthropicProvider
from proxy.providers.azure import AzureOpenAIProvider
from proxy.providers.base import Provider, UpstreamError, UpstreamResponse
from proxy.providers.openai import OpenAIProvider
from routing.table import ProviderConfig

_PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "azure": AzureOpenAIProvider,
    "anthropic": AnthropicProvider,
}


def provider_for(config: ProviderConfig) -> Provider:
    """The adapter for one provider, built per attempt (it holds only the config)."""
    return _PROVIDERS[config.kind](config)


__all__ = ["Provider", "ProviderConfig", "UpstreamError", "UpstreamResponse", "provider_for"]
