"""The fake upstream's Azure OpenAI paths over real sockets, driven by the official
openai SDK's AzureOpenAI client: the deployment in the path, api-version, api-key."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import openai
import orjson
import pytest

from fakeupstream.testing import (
    fake_upstream_stats,
    reset_fake_upstream_stats,
    start_fake_upstream,
    stop_fake_upstream,
)

MESSAGES = [{"role": "user", "content": "Hello Azure"}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    process, url = start_fake_upstream()
    yield url
    stop_fake_upstream(process)


@pytest.fixture(autouse=True)
def clean_stats(base_url: str) -> None:
    reset_fake_upstream_stats(base_url)


def azure(base_url: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=base_url, api_key="azure-key",
                              api_version="2024-10-21", max_retries=0)


def raw_post(base_url: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("POST", path, body=orjson.dumps({"messages": MESSAGES}),
                           headers=headers)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def test_it_answers_chat_on_a_deployments_path(base_url: str) -> None:
    completion = azure(base_url).chat.completions.create(model="prod-4o", messages=MESSAGES)

    assert completion.model == "prod-4o"
    assert completion.choices[0].message.content.startswith("Echo: Hello Azure (prod-4o ")
    stats = fake_upstream_stats(base_url)
    assert stats["by_path"] == {"/openai/deployments/prod-4o/chat/completions": 1}
    assert stats["by_token"] == {"azure-key": 1}
    assert stats["by_model"] == {"prod-4o": 1}


def test_it_streams_and_embeds_on_deployments_paths(base_url: str) -> None:
    sdk = azure(base_url)

    chunks = list(sdk.chat.completions.create(model="prod-4o", messages=MESSAGES, stream=True))
    vectors = sdk.embeddings.create(model="prod-embed", input="apple")

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(vectors.data[0].embedding) == 16
    assert set(fake_upstream_stats(base_url)["by_path"]) == {
        "/openai/deployments/prod-4o/chat/completions",
        "/openai/deployments/prod-embed/embeddings"}


def test_it_answers_responses_for_azure(base_url: str) -> None:
    response = azure(base_url).responses.create(model="prod-4o", input="Hi")

    assert response.output_text.startswith("Echo: Hi (prod-4o ")
    assert fake_upstream_stats(base_url)["by_path"] == {"/openai/responses": 1}


def test_it_wants_an_api_key_and_an_api_version(base_url: str) -> None:
    path = "/openai/deployments/prod-4o/chat/completions"

    no_key = raw_post(base_url, f"{path}?api-version=2024-10-21", {})
    no_version = raw_post(base_url, path, {"api-key": "azure-key"})
    fine = raw_post(base_url, f"{path}?api-version=2024-10-21", {"api-key": "azure-key"})

    assert no_key[0] == 401
    assert no_key[1]["error"]["code"] == "401"
    assert no_version == (404, {"error": {"code": "404", "message": "Resource not found"}})
    assert fine[0] == 200
