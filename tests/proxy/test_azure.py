"""An organization whose provider is Azure OpenAI, through the real gateway: the
upstream model is the deployment in the URL, with the api-version and an api-key."""

import secrets
from dataclasses import dataclass

import openai
import pytest

from fakeupstream.testing import request
from organizations.services import api_key_create, organization_create, provider_add
from proxy.providers import ProviderConfig, provider_for
from proxy.providers.azure import DEFAULT_API_VERSION, AzureOpenAIProvider
from routing.services import TargetSpec, route_set
from tests.proxy.helpers import ask, client_for


def azure_provider(base_url: str, api_version: str = "2024-10-21") -> AzureOpenAIProvider:
    provider = provider_for(ProviderConfig(id=1, name="azure", kind="azure", base_url=base_url,
                                           api_key="azure-key", api_version=api_version))
    assert isinstance(provider, AzureOpenAIProvider)
    return provider


@pytest.mark.parametrize("base_url", ["https://acme.openai.azure.com",
                                      "https://acme.openai.azure.com/",
                                      "https://acme.openai.azure.com/openai"])
def test_it_puts_the_deployment_and_api_version_in_the_url(base_url):
    provider = azure_provider(base_url)

    assert provider.url("chat/completions", {"model": "prod 4o"}) == (
        "https://acme.openai.azure.com/openai/deployments/prod%204o/chat/completions"
        "?api-version=2024-10-21")
    assert provider.url("embeddings", {"model": "embed"}) == (
        "https://acme.openai.azure.com/openai/deployments/embed/embeddings"
        "?api-version=2024-10-21")
    assert provider.url("responses", {"model": "prod"}) == (
        "https://acme.openai.azure.com/openai/responses?api-version=2024-10-21")
    assert provider.url("models", {}) == (
        "https://acme.openai.azure.com/openai/models?api-version=2024-10-21")
    assert provider.headers() == {"api-key": "azure-key", "Content-Type": "application/json"}


def test_it_uses_the_default_api_version_when_none_is_saved():
    provider = azure_provider("https://acme.openai.azure.com", api_version="")

    assert provider.url("chat/completions", {"model": "m"}).endswith(
        f"?api-version={DEFAULT_API_VERSION}")


@dataclass
class Azure:
    client: openai.OpenAI
    provider_key: str
    upstream_url: str

    def paths(self) -> dict[str, int]:
        return request("GET", self.upstream_url, "/stats")[1]["by_path"]

    def calls(self) -> int:
        return request("GET", self.upstream_url, "/stats")[1]["by_token"].get(
            self.provider_key, 0)


@pytest.fixture
def azure(gateway, live_world, fake_upstream) -> Azure:
    org = organization_create(name=f"Azure {secrets.token_hex(3)}")
    raw_key = api_key_create(organization=org).raw_key
    provider_key = f"azure-{secrets.token_hex(6)}"
    provider = provider_add(organization=org, name="azure", kind="azure",
                            base_url=fake_upstream.url, api_key=provider_key,
                            api_version="2024-10-21", is_default=True)
    route_set(organization=org, name="fast",
              targets=[TargetSpec(provider=provider, upstream_model="prod-mini")])
    request("POST", fake_upstream.url, "/stats/reset")
    return Azure(client_for(gateway.url, raw_key), provider_key, fake_upstream.url)


@pytest.mark.django_db(transaction=True)
def test_it_asks_the_deployment_named_by_the_model(azure):
    completion, headers = ask(azure.client, "Hello Azure", model="prod-4o")

    assert completion.model == "prod-4o"
    assert completion.choices[0].message.content.startswith("Echo: Hello Azure (prod-4o ")
    assert headers["x-cognitude-cache"] == "MISS"
    assert azure.paths() == {"/openai/deployments/prod-4o/chat/completions": 1}
    assert azure.calls() == 1


@pytest.mark.django_db(transaction=True)
def test_it_asks_the_deployment_a_route_names(azure):
    completion, _ = ask(azure.client, "Through a route", model="fast")

    assert completion.choices[0].message.content.startswith("Echo: Through a route (prod-mini ")
    assert azure.paths() == {"/openai/deployments/prod-mini/chat/completions": 1}


@pytest.mark.django_db(transaction=True)
def test_it_streams_and_embeds_through_deployments(azure):
    chunks = list(azure.client.chat.completions.create(
        model="prod-4o", messages=[{"role": "user", "content": "Stream"}], stream=True,
        stream_options={"include_usage": True}))
    vectors = azure.client.embeddings.create(model="prod-embed", input="apple")

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(
        "Echo: Stream (prod-4o ")
    assert chunks[-1].usage.prompt_tokens == 2
    assert len(vectors.data[0].embedding) == 16
    assert azure.paths() == {"/openai/deployments/prod-4o/chat/completions": 1,
                             "/openai/deployments/prod-embed/embeddings": 1}


@pytest.mark.django_db(transaction=True)
def test_it_answers_responses_through_azure(azure):
    response = azure.client.responses.create(model="prod-4o", input="Hi")

    assert response.output_text.startswith("Echo: Hi (prod-4o ")
    assert azure.paths() == {"/openai/responses": 1}
