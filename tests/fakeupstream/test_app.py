"""The fake upstream over real sockets, driven by the official OpenAI SDK and raw HTTP.

No database: the fake is independent of Django.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from fakeupstream.testing import (
    PROJECT_DIR,
    control_fake_upstream,
    fake_upstream_stats,
    free_port,
    reset_fake_upstream_stats,
    start_fake_upstream,
    stop_fake_upstream,
    wait_until_answering,
)

MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    process, url = start_fake_upstream()
    yield url
    stop_fake_upstream(process)


@pytest.fixture(autouse=True)
def clean_state(base_url: str) -> Iterator[None]:
    reset_fake_upstream_stats(base_url)
    yield
    control_fake_upstream(base_url)


def client(base_url: str, api_key: str = "sk-test") -> openai.OpenAI:
    # No retries: a test that injects an error wants to see it once.
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)


def async_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0)


def connect(base_url: str) -> http.client.HTTPConnection:
    host, port = base_url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=5)


def raw_post(
    base_url: str,
    path: str,
    body: bytes | dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = connect(base_url)
    try:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection.request("POST", path, body=payload, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def chat_body(content: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": content}],
        **fields,
    }


def wait_for(condition: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_it_lists_models(base_url: str) -> None:
    ids = {model.id for model in client(base_url).models.list()}

    assert {"gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small"} <= ids


def test_it_answers_chat_completions_in_openai_shape(base_url: str) -> None:
    completion = client(base_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.created > 0
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert choice.message.content.startswith("Echo: What is the capital of France?")
    assert "gpt-4o-mini" in choice.message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_it_answers_the_same_request_the_same_way(base_url: str) -> None:
    sdk = client(base_url)

    def content(**fields: Any) -> str | None:
        return (
            sdk.chat.completions.create(**{"model": "gpt-4o", "messages": MESSAGES, **fields})
            .choices[0]
            .message.content
        )

    assert content() == content()
    assert content() != content(model="gpt-4o-mini")
    assert content() != content(messages=[{"role": "user", "content": "Another question"}])
    assert content() != content(temperature=0.5)
    # What does not change the answer does not change the content.
    assert content() == content(user="someone")


def test_it_gives_each_answer_its_own_id(base_url: str) -> None:
    sdk = client(base_url)

    first = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    second = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert first.id != second.id


def test_it_returns_n_choices(base_url: str) -> None:
    completion = client(base_url).chat.completions.create(model="gpt-4o", messages=MESSAGES, n=3)

    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in completion.choices}) == 3


def test_it_answers_async_clients(base_url: str) -> None:
    async def ask() -> str | None:
        async with async_client(base_url) as sdk:
            completion = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return completion.choices[0].message.content

    assert (
        asyncio.run(ask())
        == client(base_url)
        .chat.completions.create(model="gpt-4o", messages=MESSAGES)
        .choices[0]
        .message.content
    )


def test_it_streams_chat_completions(base_url: str) -> None:
    sdk = client(base_url)
    expected = (
        sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message.content
    )

    chunks = list(sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    pieces = [chunk.choices[0].delta.content for chunk in chunks[1:-1]]
    assert 4 <= len(pieces) <= 6
    assert "".join(piece or "" for piece in pieces) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    stats = fake_upstream_stats(base_url)
    assert (stats["streams_started"], stats["streams_completed"]) == (1, 1)


def test_it_streams_usage_only_when_asked(base_url: str) -> None:
    sdk = client(base_url)
    expected = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES).usage

    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[-1].choices == []
    assert chunks[-1].usage == expected
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_it_streams_to_async_clients(base_url: str) -> None:
    async def collect() -> str:
        async with async_client(base_url) as sdk:
            stream = await sdk.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            )
            return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    expected = client(base_url).chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert asyncio.run(collect()) == expected.choices[0].message.content


def test_it_streams_n_choices(base_url: str) -> None:
    chunks = list(
        client(base_url).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, n=2, stream=True
        )
    )

    texts = ["", ""]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts[0] != texts[1]
    assert all(text.startswith("Echo: ") for text in texts)


def test_it_sends_raw_server_sent_events(base_url: str) -> None:
    status, headers, body = raw_post(base_url, "/v1/chat/completions", chat_body("Hi", stream=True))

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = body.decode().split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    assert all(event.startswith("data: {") for event in events[:-2])


def test_it_sends_stream_chunks_one_by_one(base_url: str) -> None:
    body = chat_body("Slowly [[fault:chunk_delay_ms=100]]", stream=True)
    connection = connect(base_url)
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body))
    response = connection.getresponse()

    started = time.monotonic()
    first = response.read(6)
    first_at = time.monotonic() - started
    response.read()
    total = time.monotonic() - started
    connection.close()

    assert first == b"data: "
    # Eight events, seven pauses: the first event left long before the last.
    assert total >= 0.7
    assert first_at < total / 4


def test_it_answers_text_completions(base_url: str) -> None:
    completion = client(base_url).completions.create(
        model="gpt-3.5-turbo-instruct", prompt=["Say a", "Say b"]
    )

    assert completion.object == "text_completion"
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.choices[0].text.startswith("Echo: Say a")
    assert completion.choices[1].text.startswith("Echo: Say b")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None


def test_it_streams_text_completions(base_url: str) -> None:
    sdk = client(base_url)
    expected = (
        sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say a").choices[0].text
    )

    chunks = list(
        sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say a", stream=True)
    )

    assert "".join(chunk.choices[0].text for chunk in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_it_answers_embeddings(base_url: str) -> None:
    sdk = client(base_url)

    result = sdk.embeddings.create(model="text-embedding-3-small", input=["apple", "pear", "apple"])

    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(vector) == 16 for vector in vectors)
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert sum(value * value for value in vectors[0]) == pytest.approx(1.0, abs=1e-4)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0
    single = sdk.embeddings.create(model="text-embedding-3-small", input="apple", dimensions=8)
    assert len(single.data) == 1
    assert len(single.data[0].embedding) == 8


def test_it_encodes_embeddings_as_floats_or_base64(base_url: str) -> None:
    body: dict[str, Any] = {"model": "text-embedding-3-small", "input": "apple"}

    floats = json.loads(
        raw_post(base_url, "/v1/embeddings", {**body, "encoding_format": "float"})[2]
    )
    packed = json.loads(
        raw_post(base_url, "/v1/embeddings", {**body, "encoding_format": "base64"})[2]
    )

    decoded = struct.unpack("<16f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


def test_it_rejects_unknown_models(base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client(base_url).chat.completions.create(model="unknown-model", messages=MESSAGES)

    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    status, _, body = raw_post(base_url, "/v1/embeddings", {"model": "unknown-x", "input": "a"})
    assert status == 404
    assert json.loads(body) == {
        "error": {
            "message": "The model `unknown-x` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_it_rejects_bad_json(base_url: str) -> None:
    status, _, body = raw_post(base_url, "/v1/chat/completions", b"{not json")

    assert status == 400
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_it_rejects_requests_without_messages(base_url: str) -> None:
    status, _, body = raw_post(base_url, "/v1/chat/completions", {"model": "gpt-4o"})

    assert status == 400
    assert json.loads(body)["error"]["param"] == "messages"


def test_it_injects_error_statuses(base_url: str) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        client(base_url).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hi [[fault:status=500]]"}],
        )

    assert raised.value.status_code == 500
    status, _, body = raw_post(
        base_url, "/v1/chat/completions", chat_body("Hi [[fault:status=503]]")
    )
    assert status == 503
    assert json.loads(body)["error"]["type"] == "server_error"


def test_it_injects_rate_limits_with_retry_after(base_url: str) -> None:
    status, headers, body = raw_post(
        base_url, "/v1/chat/completions", chat_body("Hi [[fault:status=429]]")
    )

    assert status == 429
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        client(base_url).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hi [[fault:status=429]]"}],
        )


def test_it_injects_faults_in_streams_before_they_start(base_url: str) -> None:
    status, headers, _ = raw_post(
        base_url, "/v1/chat/completions", chat_body("[[fault:status=502]]", stream=True)
    )

    assert status == 502
    assert headers["content-type"] == "application/json"


def test_it_injects_delays(base_url: str) -> None:
    started = time.monotonic()
    status, _, _ = raw_post(
        base_url, "/v1/chat/completions", chat_body("Hi [[fault:delay_ms=300]]")
    )

    assert status == 200
    assert time.monotonic() - started >= 0.3


def test_it_breaks_streams(base_url: str) -> None:
    connection = connect(base_url)
    body = chat_body("Break [[fault:break_after=2]]", stream=True)
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body))
    response = connection.getresponse()

    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    connection.close()

    received = raised.value.partial.decode()
    assert received.count("data: ") == 3  # the role chunk and two content chunks
    assert "[DONE]" not in received
    with pytest.raises(openai.APIError):
        list(
            client(base_url).chat.completions.create(
                model="gpt-4o", messages=body["messages"], stream=True
            )
        )
    stats = fake_upstream_stats(base_url)
    assert (
        stats["streams_started"],
        stats["streams_broken"],
        stats["streams_completed"],
    ) == (2, 2, 0)


def test_it_breaks_non_streamed_answers(base_url: str) -> None:
    connection = connect(base_url)
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(chat_body("[[fault:break_after=10]]")),
    )
    response = connection.getresponse()

    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    connection.close()

    assert raised.value.partial == b'{"id":"cha'


def test_it_counts_streams_cancelled_by_the_client(base_url: str) -> None:
    connection = connect(base_url)
    body = chat_body("Long [[fault:chunk_delay_ms=100]]", stream=True)
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body))
    response = connection.getresponse()
    assert response.read(6) == b"data: "

    response.close()
    connection.close()

    assert wait_for(lambda: fake_upstream_stats(base_url)["streams_cancelled"] == 1)
    stats = fake_upstream_stats(base_url)
    assert (
        stats["streams_started"],
        stats["streams_completed"],
        stats["in_flight"],
    ) == (1, 0, 0)


def test_it_counts_requests_per_path_token_and_model(base_url: str) -> None:
    client(base_url, "sk-org-a").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    client(base_url, "sk-org-a").embeddings.create(model="text-embedding-3-small", input="a")
    client(base_url, "sk-org-b").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    raw_post(base_url, "/v1/chat/completions", chat_body("No key at all"))

    stats = fake_upstream_stats(base_url)

    assert stats["requests_total"] == 4
    assert stats["by_path"] == {"/v1/chat/completions": 3, "/v1/embeddings": 1}
    assert stats["by_token"] == {"sk-org-a": 2, "sk-org-b": 1, "": 1}
    assert stats["by_model"] == {
        "gpt-4o": 2,
        "text-embedding-3-small": 1,
        "gpt-4o-mini": 1,
    }


def test_it_counts_requests_in_flight(base_url: str) -> None:
    slow = threading.Thread(
        target=raw_post,
        args=(base_url, "/v1/chat/completions", chat_body("[[fault:delay_ms=500]]")),
    )
    slow.start()

    assert wait_for(lambda: fake_upstream_stats(base_url)["in_flight"] == 1)
    slow.join()
    assert fake_upstream_stats(base_url)["in_flight"] == 0


def test_it_resets_stats(base_url: str) -> None:
    client(base_url).chat.completions.create(model="gpt-4o", messages=MESSAGES)

    reset_fake_upstream_stats(base_url)

    stats = fake_upstream_stats(base_url)
    assert stats["requests_total"] == 0
    assert stats["by_token"] == {}


def test_it_changes_latency_at_runtime(base_url: str) -> None:
    assert control_fake_upstream(base_url, latency_ms=600) == {
        "latency_ms": 600,
        "chunk_delay_ms": 0,
    }
    started = time.monotonic()
    client(base_url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert time.monotonic() - started >= 0.6

    assert control_fake_upstream(base_url) == {"latency_ms": 0, "chunk_delay_ms": 0}

    # Back to no latency: well under the 600 ms, even on a loaded machine.
    started = time.monotonic()
    client(base_url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert time.monotonic() - started < 0.6


def test_it_rejects_unknown_control_settings(base_url: str) -> None:
    status, _, body = raw_post(base_url, "/control", {"speed": 3})

    assert status == 400
    assert json.loads(body)["error"]["param"] == "speed"


def test_it_runs_as_a_management_command() -> None:
    port = free_port()
    command = [sys.executable, "manage.py", "fakeupstream", "--port", str(port)]
    process = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True)
    try:
        assert wait_until_answering(process, port, timeout=10)
        assert process.stdout is not None
        assert (
            process.stdout.readline()
            == f"fakeupstream listening on http://127.0.0.1:{port} (latency 0 ms)\n"
        )
    finally:
        stop_fake_upstream(process)


def test_it_sends_an_error_chunk_mid_stream(base_url: str) -> None:
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client(base_url).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "[[fault:stream_error=503]]"}],
            stream=True,
        ):
            received.append(chunk)

    assert raised.value.message == "Injected fault: stream error 503."
    assert len(received) == 6  # the role chunk and every content chunk, no finish
    assert fake_upstream_stats(base_url)["streams_broken"] == 1
