from caching.keys import SCHEMA_VERSION, redis_key, request_hash

BASE = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def h(body: dict, **kwargs) -> str:
    return request_hash(endpoint="chat/completions", body=body, **kwargs)


def test_it_keeps_the_keys_of_stored_entries():
    # Cold-tier entries live indefinitely under these keys, so the canonical form is a
    # stored format: a change to it must be deliberate, with SCHEMA_VERSION bumped (and
    # both values here updated), never a side effect of a refactor.
    assert SCHEMA_VERSION == 1
    assert h(BASE) == "2d1c118831f4d7c395fa3a1f23571f7cd134768a52a26f26315a3e3fa4438d36"


def test_it_ignores_key_order_stream_user_and_metadata():
    reordered = {"messages": BASE["messages"], "model": "gpt-4o"}
    assert h(reordered) == h(BASE)
    assert h({**BASE, "stream": True, "stream_options": {"include_usage": True}}) == h(BASE)
    assert h({**BASE, "user": "u1"}) == h({**BASE, "user": "u2"})
    assert h({**BASE, "metadata": {"a": 1}}) == h(BASE)


def test_it_separates_everything_that_changes_the_answer():
    variants = [
        BASE,
        {**BASE, "temperature": 0},
        {**BASE, "temperature": 0.7},
        {**BASE, "max_tokens": 5},
        {**BASE, "top_p": 0.5},
        {**BASE, "n": 2},
        {**BASE, "stop": ["\n"]},
        {**BASE, "seed": 7},
        {**BASE, "tool_choice": "none"},
        {**BASE, "response_format": {"type": "json_object"}},
        {**BASE, "model": "gpt-4o-mini"},
        {**BASE, "messages": [{"role": "user", "content": "hi!"}]},
        {**BASE, "some_future_parameter": True},
    ]
    assert len({h(v) for v in variants}) == len(variants)


def test_it_separates_namespaces_and_endpoints():
    assert h(BASE, namespace="a") != h(BASE, namespace="b") != h(BASE)
    assert request_hash(endpoint="completions", body=BASE) != h(BASE)


def test_it_scopes_the_redis_key_by_organization():
    assert redis_key(7, "abc") == "llm_cache:{7}:abc"
    assert redis_key(7, "abc") != redis_key(8, "abc")
