"""Property-based fuzzing of the /v1 request parser (proxy/parse.py and validation):
whatever bytes or JSON arrive, `parse` returns a Request (whose cache key can be made)
or a Refusal with a 4xx status, and never raises.

Bounded for `make test` (the `ci` profile); BADINPUT_HYPOTHESIS_PROFILE=long runs a
hundred times more examples.
"""

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caching.keys import request_hash
from proxy.parse import Refusal, Request, parse
from tests.badinput.corpus import GOOD_BODIES

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=15_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("BADINPUT_HYPOTHESIS_PROFILE", "ci"))

ENDPOINTS = list(GOOD_BODIES)
FIELDS = sorted({field for body in GOOD_BODIES.values() for field in body} | {
    "stream", "stream_options", "temperature", "top_p", "n", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "system",
    "max_output_tokens", "previous_response_id", "instructions", "background",
    "conversation", "api_base", "base_url", "api_key", "tools", "stop", "metadata"})

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["role", "content", "type", "include_usage", "x"])
                      | st.text(max_size=5), children, max_size=4),
    max_leaves=20)
# A good body with fields replaced or added: what gets past the first checks.
mutated_bodies = st.builds(
    lambda endpoint, changes: (endpoint, {**GOOD_BODIES[endpoint], **changes}),
    st.sampled_from(ENDPOINTS), st.dictionaries(st.sampled_from(FIELDS), json_values,
                                                max_size=4))
header_bytes = st.binary(max_size=80) | st.sampled_from(
    [b"no-cache", b"no-store", b"max-age=10", b"max-age=\xb2", b"max-age=" + b"9" * 50])


def to_json(value: object) -> bytes:
    # The standard library's writer: NaN, Infinity and integers past 64 bits included,
    # as a client may send them.
    return json.dumps(value).encode()


def check(endpoint: str, headers: dict[bytes, bytes], raw: bytes) -> None:
    result = parse(endpoint, headers, raw)
    assert isinstance(result, Request | Refusal)
    if isinstance(result, Refusal):
        assert 400 <= result.status < 500
        assert result.message and result.code
        return
    # What the gateway does next with an accepted request must not fail either.
    assert isinstance(result.model, str) and result.model.strip()
    request_hash(endpoint=result.endpoint, body=result.body,
                 namespace=result.controls.namespace)


@PROFILE
@given(st.sampled_from(ENDPOINTS), st.binary(max_size=300))
def test_it_parses_any_bytes(endpoint, raw):
    check(endpoint, {}, raw)


@PROFILE
@given(st.sampled_from(ENDPOINTS), json_values)
def test_it_parses_any_json(endpoint, value):
    check(endpoint, {}, to_json(value))


@PROFILE
@given(mutated_bodies)
def test_it_parses_any_field_of_any_kind(endpoint_and_body):
    endpoint, body = endpoint_and_body
    check(endpoint, {}, to_json(body))


@PROFILE
@given(st.sampled_from(ENDPOINTS), st.integers(min_value=0, max_value=1100),
       st.sampled_from([b"[", b'{"a":']))
def test_it_parses_any_nesting(endpoint, depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    nested = opener * depth + b"1" + closer * depth
    good = to_json(GOOD_BODIES[endpoint])
    check(endpoint, {}, good[:-1] + b',"tools":' + nested + b"}")


@PROFILE
@given(st.sampled_from(ENDPOINTS), header_bytes, header_bytes)
def test_it_parses_any_cache_headers(endpoint, cache_control, namespace):
    headers = {b"cache-control": cache_control, b"x-cognitude-cache-namespace": namespace}
    check(endpoint, headers, to_json(GOOD_BODIES[endpoint]))
