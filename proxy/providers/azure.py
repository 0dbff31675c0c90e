"""Azure OpenAI: OpenAI's wire format at Azure's URLs.

The base URL is the resource endpoint (https://NAME.openai.azure.com) and the upstream
model is the deployment: POST {base}/openai/deployments/{deployment}/chat/completions
?api-version=..., with the key in an `api-key` header. The body keeps its "model" (Azure
ignores it), so the client's bytes still go unchanged. The Responses API is
{base}/openai/responses, which takes the deployment as the body's model.
"""

from urllib.parse import quote

from proxy.providers.openai import OpenAIProvider

# Azure's current GA data-plane version, for providers saved without one.
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIProvider(OpenAIProvider):
    kind = "azure"

    def url(self, endpoint: str, body: dict) -> str:
        base = self.config.base_url.rstrip("/").removesuffix("/openai")
        version = quote(self.config.api_version or DEFAULT_API_VERSION, safe="")
        if endpoint in ("responses", "models") or endpoint.startswith("models/"):
            path = endpoint
        else:
            path = f"deployments/{quote(str(body.get('model') or ''), safe='')}/{endpoint}"
        return f"{base}/openai/{path}?api-version={version}"

    def headers(self) -> dict[str, str]:
        return {"api-key": self.config.api_key, "Content-Type": "application/json"}
