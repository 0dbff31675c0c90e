"""Streaming through the gateway: a streamed miss is relayed and stored, a streamed hit
is replayed chunk for chunk, either kind of cached answer serves either kind of
request, usage chunks go only to clients that ask, and a client that goes away
cancels the upstream call and leaves nothing behind.
"""

import asyncio
import time

import httpx
import openai

from caching.models import CacheEntry
from tests.proxy.helpers import client_for, wait_for_entries

MODEL = "gpt-4o-mini"
WITH_USAGE = {"stream_options": {"include_usage": True}}
SETTLE_SECONDS = 0.5  # the gateway flushes cold-tier writes every 0.05 s in tests


def sdk(gateway, raw_key: str) -> openai.OpenAI:
    return client_for(gateway.url, raw_key, timeout=10)


def async_sdk(gateway, raw_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=raw_key, max_retries=0,
                              timeout=10)


def ask(text: str, **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **fields}


def streamed(client: openai.OpenAI, request: dict, **fields):
    """(the X-Cognitude-Cache header, the chunks) of a streamed request read to its end."""
    raw = client.chat.completions.with_raw_response.create(**request, **fields, stream=True)
    return raw.headers["x-cognitude-cache"], list(raw.parse())


def deltas(chunks) -> list[tuple]:
    """What a client sees of each chunk: its id and each choice's delta and finish."""
    return [
        (chunk.id, [(choice.index, choice.delta.role, choice.delta.content,
                     choice.finish_reason) for choice in chunk.choices])
        for chunk in chunks
    ]


def content_of(chunks, index: int = 0) -> str:
    return "".join(choice.delta.content or "" for chunk in chunks
                   for choice in chunk.choices if choice.index == index)


def assert_nothing_cached(gateway, tenant) -> None:
    """Neither tier holds anything for the tenant once the gateway has settled."""
    time.sleep(SETTLE_SECONDS)
    assert not CacheEntry.objects.filter(organization=tenant.org).exists()
    stats = httpx.get(f"{gateway.url}/cache/stats", headers={"X-API-Key": tenant.raw_key}).json()
    assert (stats["total_entries"], stats["redis_entries"]) == (0, 0)


# --- Miss and hit ---------------------------------------------------------------------

def test_it_replays_a_streamed_miss_chunk_for_chunk(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Tell me about streams")

    first_outcome, first = streamed(client, request)
    second_outcome, second = streamed(client, request)

    assert (first_outcome, second_outcome) == ("MISS", "HIT")
    assert deltas(second) == deltas(first)
    assert len(first) >= 4  # role, several content pieces, finish
    assert first[0].choices[0].delta.role == "assistant"
    assert first[-1].choices[0].finish_reason == "stop"
    assert content_of(first).startswith("Echo: Tell me about streams")
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_replays_a_stream_from_the_cold_tier(gateway, live_world, fake_upstream,
                                                clean_redis):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Remember this one")
    _, first = streamed(client, request)
    assert len(wait_for_entries(live_world.a.org, 1)) == 1
    clean_redis.flushdb()  # Redis forgets; PostgreSQL still has it

    raw = client.chat.completions.with_raw_response.create(**request, stream=True)

    assert raw.headers["x-cognitude-cache"] == "HIT"
    assert raw.headers["x-cognitude-cache-tier"] == "postgres"
    assert deltas(list(raw.parse())) == deltas(first)
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_streams_a_cached_json_answer(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("First as JSON")
    answer = client.chat.completions.create(**request)

    outcome, chunks = streamed(client, request)

    assert outcome == "HIT"
    assert content_of(chunks) == answer.choices[0].message.content
    assert {chunk.id for chunk in chunks} == {answer.id}
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_answers_json_from_a_cached_stream(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("First as a stream")
    _, chunks = streamed(client, request, **WITH_USAGE)

    raw = client.chat.completions.with_raw_response.create(**request)

    assert raw.headers["x-cognitude-cache"] == "HIT"
    answer = raw.parse()
    assert answer.object == "chat.completion"
    assert answer.id == chunks[0].id
    assert answer.model == MODEL
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == content_of(chunks)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage == chunks[-1].usage
    assert answer.usage.completion_tokens > 0
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_keeps_every_choice_of_a_stream(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Two ways to say it", n=2)
    _, chunks = streamed(client, request)

    answer = client.chat.completions.create(**request)
    _, replayed = streamed(client, request)

    assert [choice.message.content for choice in answer.choices] == [
        content_of(chunks, 0), content_of(chunks, 1)]
    assert content_of(chunks, 0).endswith("#0") and content_of(chunks, 1).endswith("#1")
    assert deltas(replayed) == deltas(chunks)
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_streams_legacy_completions_both_ways(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"}
    first = list(client.completions.create(**request, stream=True))

    raw = client.completions.with_raw_response.create(**request)
    replayed = list(client.completions.create(**request, stream=True))

    assert raw.headers["x-cognitude-cache"] == "HIT"
    text = "".join(chunk.choices[0].text for chunk in first if chunk.choices)
    assert text.startswith("Echo: Once upon a time")
    assert raw.parse().choices[0].text == text
    assert [chunk.model_dump() for chunk in replayed] == [chunk.model_dump() for chunk in first]
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_streams_a_cached_legacy_completion(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": "Twice upon a time"}
    answer = client.completions.create(**request)

    raw = client.completions.with_raw_response.create(**request, stream=True)

    assert raw.headers["x-cognitude-cache"] == "HIT"
    chunks = list(raw.parse())
    assert all(chunk.object == "text_completion" and chunk.id == answer.id for chunk in chunks)
    assert "".join(chunk.choices[0].text for chunk in chunks) == answer.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


# --- Usage chunks ---------------------------------------------------------------------

def usage_chunks(chunks) -> list:
    return [chunk for chunk in chunks if chunk.usage is not None]


def test_it_sends_a_usage_chunk_on_miss_and_hit_only_when_asked(gateway, live_world,
                                                                 fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Count my tokens")

    miss_outcome, miss = streamed(client, request, **WITH_USAGE)
    bare_outcome, bare = streamed(client, request)
    hit_outcome, hit = streamed(client, request, **WITH_USAGE)

    assert (miss_outcome, bare_outcome, hit_outcome) == ("MISS", "HIT", "HIT")
    # Asked for: one last chunk with no choices, as OpenAI sends it.
    assert usage_chunks(miss) == [miss[-1]] and miss[-1].choices == []
    assert miss[-1].usage.prompt_tokens > 0 and miss[-1].usage.completion_tokens > 0
    assert usage_chunks(hit) == [hit[-1]] and hit[-1].choices == []
    assert hit[-1].usage == miss[-1].usage
    assert deltas(hit) == deltas(miss)
    # Not asked for: no usage anywhere.
    assert usage_chunks(bare) == []
    assert deltas(bare) == deltas(miss[:-1])
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_sends_a_usage_chunk_for_a_cached_json_answer_only_when_asked(gateway, live_world,
                                                                         fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Count my tokens from JSON")
    answer = client.chat.completions.create(**request)

    _, with_usage = streamed(client, request, **WITH_USAGE)
    _, bare = streamed(client, request)

    assert usage_chunks(with_usage) == [with_usage[-1]] and with_usage[-1].choices == []
    assert with_usage[-1].usage == answer.usage
    assert usage_chunks(bare) == []
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_strips_the_usage_chunk_it_asked_for(gateway, live_world, fake_upstream):
    # The gateway always asks upstream for usage (costing needs it), but a client that
    # did not ask never sees it, even on a miss.
    outcome, chunks = streamed(sdk(gateway, live_world.a.raw_key), ask("No usage for me"))

    assert outcome == "MISS"
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


# --- The async client -----------------------------------------------------------------

def test_it_streams_to_the_async_client(gateway, live_world, fake_upstream):
    async def both() -> tuple[list, list, list]:
        async with async_sdk(gateway, live_world.a.raw_key) as client:
            request = ask("Async, please", stream=True)
            outcomes, runs = [], []
            for _ in range(2):
                raw = await client.chat.completions.with_raw_response.create(**request)
                outcomes.append(raw.headers["x-cognitude-cache"])
                runs.append([chunk async for chunk in raw.parse()])
            return outcomes, runs[0], runs[1]

    outcomes, first, second = asyncio.run(both())

    assert outcomes == ["MISS", "HIT"]
    assert deltas(second) == deltas(first)
    assert content_of(first).startswith("Echo: Async, please")
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_makes_one_upstream_call_for_identical_concurrent_streams(gateway, live_world,
                                                                     fake_upstream):
    request = ask("All at once [[fault:chunk_delay_ms=100]]", stream=True)

    async def one(client: openai.AsyncOpenAI) -> tuple[str, str]:
        raw = await client.chat.completions.with_raw_response.create(**request)
        chunks = [chunk async for chunk in raw.parse()]
        return raw.headers["x-cognitude-cache"], content_of(chunks)

    async def together() -> list[tuple[str, str]]:
        async with async_sdk(gateway, live_world.a.raw_key) as client:
            return await asyncio.gather(*(one(client) for _ in range(4)))

    answers = asyncio.run(together())

    assert sorted(outcome for outcome, _ in answers) == ["HIT", "HIT", "HIT", "MISS"]
    assert len({content for _, content in answers}) == 1
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


# --- A client that goes away ----------------------------------------------------------

def wait_for_cancelled_streams(fake_upstream, more_than: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while fake_upstream.stats()["streams_cancelled"] <= more_than:
        assert time.monotonic() < deadline, "the upstream stream was never cancelled"
        time.sleep(0.05)


def test_it_cancels_the_upstream_call_when_the_client_goes_away(gateway, live_world,
                                                                fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Slow and then gone [[fault:chunk_delay_ms=300]]")
    cancelled_before = fake_upstream.stats()["streams_cancelled"]

    stream = client.chat.completions.create(**request, stream=True)
    read = [next(stream), next(stream)]
    stream.close()

    assert read[0].choices[0].delta.role == "assistant"
    wait_for_cancelled_streams(fake_upstream, cancelled_before)
    assert_nothing_cached(gateway, live_world.a)
    # The same request again is a miss: nothing partial was stored, nothing is locked.
    started = time.monotonic()
    outcome, chunks = streamed(client, request)
    assert outcome == "MISS"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert time.monotonic() - started < 5
    assert fake_upstream.calls_with(live_world.a.provider_key) == 2


def test_it_serves_a_waiting_request_when_the_first_client_goes_away(gateway, live_world,
                                                                     fake_upstream):
    # The second identical request waits for the first one's answer; when the first
    # client leaves, the second must still get a whole answer of its own.
    request = ask("Leader leaves [[fault:chunk_delay_ms=200]]", stream=True)
    cancelled_before = fake_upstream.stats()["streams_cancelled"]

    async def scene() -> tuple[str, list]:
        async with async_sdk(gateway, live_world.a.raw_key) as client:
            leader = await client.chat.completions.create(**request)
            await anext(leader)  # the leader's stream is under way

            async def follow() -> tuple[str, list]:
                raw = await client.chat.completions.with_raw_response.create(**request)
                return raw.headers["x-cognitude-cache"], [c async for c in raw.parse()]

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.3)
            await anext(leader)
            await leader.close()
            return await asyncio.wait_for(follower, 10)

    outcome, chunks = asyncio.run(scene())

    wait_for_cancelled_streams(fake_upstream, cancelled_before)
    assert outcome == "MISS"
    assert content_of(chunks).startswith("Echo: Leader leaves")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake_upstream.calls_with(live_world.a.provider_key) == 2
    assert len(wait_for_entries(live_world.a.org, 1)) == 1
