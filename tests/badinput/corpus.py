"""The bad-input corpus: malformed requests for every endpoint, as raw bytes.

Built by code, not kept as files, so that it grows with the API: the /v1 endpoints come
from the gateway's own table, the /api operations and their fields from the OpenAPI
schema the server publishes. Each case says what may come back:

- `refused`: the gateway itself must answer 4xx and nothing may reach the upstream
  (these use the `refused` tenant's key, whose provider key the fake upstream counts);
- otherwise the request may be served (unknown fields, odd values the gateway passes
  on, sent with the `passing` tenant's key): it must still never be a 5xx, and any
  4xx must be in the error shape.

`shape` is the error body required on a 4xx or 5xx: "openai" (`{"error": {"message",
"type", "param", "code"}}`, which /v1, /api, /cache and /health all use) or None where
no body can be read (HEAD).
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from proxy.app import FEEDBACK_PATH, MODELS_PATH, POST_ENDPOINTS
from tests.badinput.wire import request_bytes

JSON = (b"Content-Type", b"application/json")


@dataclass(frozen=True, slots=True)
class Keys:
    refused: str  # a proxy key whose requests must all be refused
    passing: str  # a proxy key whose requests may be served
    admin: str  # an admin-scoped key of the /api organization
    proxy_of_admin_org: str  # a proxy-scoped key of that organization (403 on managing)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    raw: bytes
    refused: bool
    shape: str | None = "openai"
    head: bool = False
    # The request leaves its connection unusable (it declared a body it never sends):
    # the client closes it after the answer.
    last_on_connection: bool = False


def bearer(key: str) -> tuple[bytes, bytes]:
    return b"Authorization", b"Bearer " + key.encode()


# --- /v1 -------------------------------------------------------------------------------

# A request each endpoint serves; every case below breaks one thing in it.
GOOD_BODIES: dict[str, dict] = {
    "chat/completions": {"model": "gpt-4o-mini",
                         "messages": [{"role": "user", "content": "hi"}]},
    "completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
    "embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "responses": {"model": "gpt-4o-mini", "input": "hi"},
    "messages": {"model": "claude-3-5-haiku-latest", "max_tokens": 16,
                 "messages": [{"role": "user", "content": "hi"}]},
}
_GENERIC_BODY = {"model": "gpt-4o-mini"}

# Values of the wrong kind for some field or other: each is sent in every field.
WRONG_VALUES: list[object] = [
    "x", "", 0, -1, 1.5, -1e308, 2**63 - 1, -(2**63), 10**30, True, False, None, [], [1],
    {}, {"a": 1}, "\u0000\u001f\u007f", "\ud7ff\ue000\U0010ffff", "9" * 5000,
]


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_bool(v: object) -> bool:
    return isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or check(v)


# What the gateway checks itself, per field: a value that fails the check must be
# refused. (OpenAI's own API takes null for any optional field.)
_COMMON_CHECKS: dict[str, Callable[[object], bool]] = {
    "model": lambda v: isinstance(v, str) and bool(v.strip()),
    "stream": _optional(_is_bool),
    "stream_options": _optional(lambda v: isinstance(v, dict)),
    **{name: _optional(_is_number)
       for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty")},
    **{name: _optional(_is_positive_int) for name in ("n", "max_tokens",
                                                      "max_completion_tokens")},
}


def _non_empty_str_or_list(v: object) -> bool:
    return isinstance(v, str | list) and bool(v)


_CHECKS: dict[str, dict[str, Callable[[object], bool]]] = {
    "chat/completions": {
        **_COMMON_CHECKS,
        "messages": lambda v: isinstance(v, list) and bool(v) and all(
            isinstance(m, dict) and m.get("role") in (
                "system", "developer", "user", "assistant", "tool", "function") for m in v),
    },
    "completions": {**_COMMON_CHECKS,
                    "prompt": lambda v: isinstance(v, str) or (isinstance(v, list) and bool(v))},
    "embeddings": {**_COMMON_CHECKS, "input": _non_empty_str_or_list,
                   "stream": lambda v: v is None or v is False},
    "responses": {
        **_COMMON_CHECKS,
        "input": lambda v: isinstance(v, str) and bool(v) or isinstance(v, list) and bool(v)
        and all(isinstance(item, dict) for item in v),
        "max_output_tokens": _optional(_is_positive_int),
        "previous_response_id": _optional(_is_str),
        "instructions": _optional(_is_str),
        "background": _optional(_is_bool),
    },
    "messages": {
        **_COMMON_CHECKS,
        "max_tokens": _is_positive_int,
        "messages": lambda v: isinstance(v, list) and bool(v) and all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") for m in v),
        "system": _optional(lambda v: isinstance(v, str | list)),
    },
}

# Fields the gateway passes on unchecked (the provider judges them): wrong kinds there
# may be served, and must never cost a 5xx.
_PASSED_ON = ("stop", "seed", "tools", "tool_choice", "response_format", "logit_bias",
              "user", "metadata", "logprobs", "top_logprobs", "parallel_tool_calls",
              "dimensions", "encoding_format", "echo", "suffix", "reasoning", "text",
              "top_k", "stop_sequences", "store")


def _json(value: object) -> bytes:
    # The standard library's: it writes integers of any size (orjson stops at 64 bits).
    return json.dumps(value, separators=(",", ":")).encode()


def _nested(depth: int) -> object:
    value: object = "deep"
    for _ in range(depth):
        value = [value]
    return value


def _v1_post(path: str, key: str, body: bytes, *extra: tuple[bytes, bytes],
             method: str = "POST", content_type: bool = True) -> bytes:
    headers = [bearer(key), *([JSON] if content_type else []), *extra]
    return request_bytes(method, path, headers, body)


def _v1_body_cases(endpoint: str, path: str, keys: Keys) -> Iterator[Case]:
    if endpoint == "feedback":
        good, checks = FEEDBACK_BODY, _FEEDBACK_CHECKS
    else:
        good = GOOD_BODIES.get(endpoint, _GENERIC_BODY)
        checks = _CHECKS.get(endpoint, _COMMON_CHECKS)
    good_bytes = _json(good)

    def refused(name: str, body: bytes, *extra: tuple[bytes, bytes]) -> Case:
        return Case(f"{path} {name}", _v1_post(path, keys.refused, body, *extra), True)

    def passing(name: str, body: bytes, *extra: tuple[bytes, bytes]) -> Case:
        return Case(f"{path} {name}", _v1_post(path, keys.passing, body, *extra), False)

    # Not JSON, or not an object.
    not_json = {
        "empty": b"", "space": b"  \r\n\t", "open-brace": b"{", "close-brace": b"}",
        "truncated": good_bytes[:-3], "trailing-garbage": good_bytes + b"x",
        "two-objects": good_bytes + good_bytes, "single-quotes": good_bytes.replace(b'"', b"'"),
        "trailing-comma": good_bytes[:-1] + b",}", "comment": b"/* hi */" + good_bytes,
        "bom": b"\xef\xbb\xbf" + good_bytes, "utf16": good_bytes.decode().encode("utf-16"),
        "nan": good_bytes[:-1] + b',"temperature":NaN}',
        "infinity": good_bytes[:-1] + b',"temperature":Infinity}',
        "minus-infinity": good_bytes[:-1] + b',"temperature":-Infinity}',
        "overflowing-float": good_bytes[:-1] + b',"temperature":1e400}',
        "hex-number": good_bytes[:-1] + b',"n":0x10}',
        "leading-zero": good_bytes[:-1] + b',"n":01}',
        "invalid-utf8": good_bytes.replace(b'"hi"', b'"h\xff\xfei"'),
        "overlong-utf8": good_bytes.replace(b'"hi"', b'"h\xc0\xafi"'),
        "utf8-surrogate": good_bytes.replace(b'"hi"', b'"h\xed\xa0\x80i"'),
        "lone-surrogate-escape": good_bytes.replace(b'"hi"', b'"h\\ud800i"'),
        "raw-nul": good_bytes.replace(b'"hi"', b'"h\x00i"'),
        "raw-newline": good_bytes.replace(b'"hi"', b'"h\ni"'),
        "raw-control": good_bytes.replace(b'"hi"', b'"h\x1bi"'),
        "bad-escape": good_bytes.replace(b'"hi"', b'"h\\qi"'),
        "nested-100k": b"[" * 100_000 + b"]" * 100_000,
        "nested-objects-2000": b'{"a":' * 2000 + b"1" + b"}" * 2000,
        "unclosed-nesting": b"[" * 5000,
        "null": b"null", "true": b"true", "number": b"42", "string": b'"hello"',
        "array": b"[" + good_bytes + b"]", "empty-array": b"[]",
        "form-encoded": b"model=gpt-4o-mini&messages=hi",
        "multipart": b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt\r\n--x--",
    }
    for name, body in not_json.items():
        yield refused(name, body)
    yield refused("empty-object", b"{}")
    yield refused("duplicate-keys-last-wrong", good_bytes[:-1] + b',"model":7}')
    yield passing("duplicate-keys-last-right", b'{"model":7,' + good_bytes[1:])

    # Nested deeper than any serialiser here follows, inside a field the gateway
    # does not look into: it can parse it, but must refuse it, not fail on it.
    for depth in (300, 1000):
        yield refused(f"nested-{depth}-in-a-field",
                      _json({**good, "metadata": {"x": 1}})[:-1]
                      + b',"tool_choice":' + b"[" * depth + b"1" + b"]" * depth + b"}")
    yield passing("nested-200-in-a-field", _json({**good, "tool_choice": _nested(200)}))

    # Each checked field with each wrong kind of value.
    for field, check in checks.items():
        for value in WRONG_VALUES:
            body = _json({**good, field: value})
            label = f"{field}={_short(value)}"
            yield refused(label, body) if not check(value) else passing(label, body)
        if field in good:
            missing = {k: v for k, v in good.items() if k != field}
            if not check(None) or field == "model":
                yield refused(f"{field}-missing", _json(missing))
    # Fields passed on to the provider.
    for field in _PASSED_ON:
        for value in ("x", 10**30, {"a": [1, {"b": None}]}):
            yield passing(f"{field}={_short(value)}", _json({**good, field: value}))
    # Fields that would choose where the request goes, or with which key.
    for field in ("api_base", "base_url", "api_key", "api_version", "custom_llm_provider"):
        for value in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:1/v1",
                      "", None, ["http://evil.example"]):
            yield refused(f"{field}={_short(value)}", _json({**good, field: value}))
    yield passing("unknown-fields", _json({**good, "frobnicate": 1, "x" * 300: {"y": []},
                                           "": None}))
    yield passing("unicode-field-names", _json({**good, "\u00e9\u4e2d\U0001f600": "v"}))
    for content_type in (b"text/plain", b"application/x-www-form-urlencoded", b"\xff/\x00"):
        yield Case(f"{path} content-type {_short(content_type)}", _v1_post(
            path, keys.passing, good_bytes, (b"Content-Type", content_type),
            content_type=False), False)
    yield Case(f"{path} no-content-type",
               _v1_post(path, keys.passing, good_bytes, content_type=False), False)
    yield passing("model-with-control-characters",
                  _json({**good, "model": "gpt\u0000\r\nX-Injected: 1\u001b[31m"}))
    yield passing("model-10k-characters", _json({**good, "model": "m" * 10_000}))

    # Many messages: served when they are well formed, refused at the first bad one.
    if "messages" in checks:
        many = [{"role": "user", "content": f"m{i}"} for i in range(10_000)]
        yield passing("10000-messages", _json({**good, "messages": many}))
        many[-1] = {"role": "robot", "content": "x"}
        yield refused("10000-messages-last-bad", _json({**good, "messages": many}))
        yield refused("messages-of-strings", _json({**good, "messages": ["hi"] * 1000}))

    # Sizes: over COGNITUDE_MAX_BODY_BYTES (4 MiB) declared, sent, or chunked.
    big = b'{"model":"gpt-4o-mini","input":"' + b"x" * (5 * 1024 * 1024) + b'"}'
    yield refused("5-mib-body", big)
    yield Case(f"{path} declared-1-tb", request_bytes(
        "POST", path, [bearer(keys.refused), JSON, (b"Content-Length", b"1099511627776")]),
        True, last_on_connection=True)
    chunk = b"x" * (1024 * 1024)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    yield Case(f"{path} chunked-5-mib", request_bytes(
        "POST", path, [bearer(keys.refused), JSON, (b"Transfer-Encoding", b"chunked")],
        chunked), True)

    # Headers.
    for name, value in [
        (b"Cache-Control", b"max-age=abc"), (b"Cache-Control", b"max-age=-1"),
        (b"Cache-Control", b"max-age=" + b"9" * 400 + b"x"),
        (b"Cache-Control", b"max-age=\xb2"),
        (b"X-Cognitude-Cache-Namespace", b"n" * 65),
        (b"X-Cognitude-Cache-Namespace", b"a\x7fb"),
    ]:
        yield refused(f"header {name.decode()}: {_short(value)}", good_bytes, (name, value))
    for name, value in [(b"Cache-Control", b"no-cache, no-store, max-age=999999999999999"),
                        (b"Cache-Control", b",,,;;;==="),
                        (b"X-Cognitude-Cache-Namespace", b"caf\xe9"),
                        (b"X-Request-Id", b"\xff" * 100),
                        (b"X-Forwarded-For", b"not-an-address, ::::, 999.1.1.1"),
                        (b"Accept-Encoding", b"gzip;q=NaN, *;q=-1"),
                        (b"Content-Encoding", b"gzip")]:
        yield passing(f"header {name.decode()}: {_short(value)}", good_bytes, (name, value))

    # Who is calling (the body is good: only the key is wrong).
    for name, headers in [
        ("no-key", []), ("empty-bearer", [(b"Authorization", b"Bearer ")]),
        ("basic", [(b"Authorization", b"Basic YWxpY2U6cHc=")]),
        ("long-bearer", [(b"Authorization", b"Bearer cog_" + b"A" * 20_000)]),
        ("latin1-key", [(b"X-API-Key", b"cog_\xe9\xff\xfe")]),
        ("key-with-spaces", [(b"Authorization", b"Bearer  cog_ abc def ")]),
        ("two-keys-one-bad", [(b"X-API-Key", b"cog_nope"),
                              (b"Authorization", b"Bearer cog_nope2")]),
    ]:
        yield Case(f"{path} auth {name}",
                   request_bytes("POST", path, [*headers, JSON], good_bytes), True)

    # Methods.
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"):
        yield Case(f"{path} method {method}", request_bytes(
            method, path, [bearer(keys.refused), JSON], good_bytes), True)
    yield Case(f"{path} method HEAD", request_bytes("HEAD", path, [bearer(keys.refused)]),
               True, shape=None, head=True)


def _models_cases(keys: Keys) -> Iterator[Case]:
    for name, headers in [("no-key", []), ("bad-key", [bearer("cog_nope")]),
                          ("latin1-key", [(b"X-API-Key", b"\xff\xfe")])]:
        for target in (MODELS_PATH, MODELS_PATH + "/gpt-4o-mini"):
            yield Case(f"{target} auth {name}", request_bytes("GET", target, headers), True)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for target in (MODELS_PATH, MODELS_PATH + "/gpt-4o-mini"):
            yield Case(f"{target} method {method}", request_bytes(
                method, target, [bearer(keys.refused), JSON], b"{}"), True)
    ids = ["m" * 10_000, "%00", "%0d%0aX-Injected:%201", "..%2f..%2fetc%2fpasswd",
           "%ff%fe", "caf%C3%A9", "a/b/c", "%25", "?x=1", "gpt-4o-mini%20", "%F0%9F%98%80"]
    for model in ids:
        target = f"{MODELS_PATH}/{model}"
        yield Case(f"GET {MODELS_PATH}/{_short(model)}",
                   request_bytes("GET", target, [bearer(keys.passing)]), False)
    yield Case(f"GET {MODELS_PATH}?junk", request_bytes(
        "GET", MODELS_PATH + "?limit=-1&after=%ff&" + "x=1&" * 2000, [bearer(keys.passing)]),
        False)


# POST /v1/feedback has a parser of its own (proxy/feedback.py); the request id below
# is nobody's, so even a well-formed body is a 404 there.
FEEDBACK_BODY = {"request_id": "0" * 32, "rating": "up"}
_FEEDBACK_CHECKS: dict[str, Callable[[object], bool]] = {
    "request_id": lambda v: isinstance(v, str) and 0 < len(v) <= 64,
    "score": lambda v: v is None or _is_number(v) and 0 <= v <= 1,
    "rating": lambda v: v in (None, "up", "down"),
    "note": lambda v: v is None or isinstance(v, str) and len(v) <= 2000,
}


def v1_cases(keys: Keys) -> Iterator[Case]:
    for path, endpoint in POST_ENDPOINTS.items():
        yield from _v1_body_cases(endpoint, path, keys)
    yield from _v1_body_cases("feedback", FEEDBACK_PATH, keys)
    yield from _models_cases(keys)
    for target in ("/v1/", "/v1/chat/completion", "/v1/%ff", "/v1/" + "x" * 8000,
                   "/v1/chat/completions/../../admin/"):
        yield Case(f"unknown {_short(target)}", request_bytes(
            "POST", target, [bearer(keys.refused), JSON], b"{}"), True)


# --- /cache and /health ----------------------------------------------------------------

def cache_and_health_cases(keys: Keys) -> Iterator[Case]:
    for name, headers in [("no-key", []), ("bad-key", [bearer("cog_nope")]),
                          ("latin1-key", [(b"X-API-Key", b"\xff\xfe\x00")])]:
        yield Case(f"GET /cache/stats auth {name}",
                   request_bytes("GET", "/cache/stats", headers), True)
        yield Case(f"DELETE /cache auth {name}", request_bytes("DELETE", "/cache", headers),
                   True)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        yield Case(f"{method} /cache/stats", request_bytes(
            method, "/cache/stats", [bearer(keys.passing), JSON], b"{}"), True)
    for method in ("GET", "POST", "PUT", "PATCH"):
        yield Case(f"{method} /cache", request_bytes(
            method, "/cache", [bearer(keys.passing), JSON], b"{}"), True)
    for tier in ("x", "", "REDIS", "%ff", "redis%00", "r" * 5000, "redis&tier=all"):
        refused = tier not in ("", "redis&tier=all")
        yield Case(f"DELETE /cache?tier={_short(tier)}", request_bytes(
            "DELETE", f"/cache?tier={tier}", [bearer(keys.passing)]), refused)
    yield Case("GET /cache/stats?junk", request_bytes(
        "GET", "/cache/stats?%ff=%fe&" + "a=1&" * 2000, [bearer(keys.passing)]), False)
    yield Case("GET /cache/stats body", request_bytes(
        "GET", "/cache/stats", [bearer(keys.passing), JSON], b"{" * 10_000), False)
    for target in ("/health?%ff=%fe", "/health?" + "a=1&" * 3000, "/health/",
                   "/health?format=%00"):
        yield Case(f"GET {_short(target)}", request_bytes("GET", target, []), False)
    for method in ("POST", "PUT", "DELETE"):
        yield Case(f"{method} /health", request_bytes(method, "/health", [JSON], b"{"), True)
    yield Case("HEAD /health", request_bytes("HEAD", "/health", []), False, shape=None,
               head=True)


# --- /api, from the OpenAPI schema ----------------------------------------------------

_METHODS = ("get", "post", "put", "patch", "delete")


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = schema["components"]["schemas"][name]
    if "allOf" in node:
        merged: dict = {}
        for part in node["allOf"]:
            merged.update(_resolve(schema, part))
        merged.update({k: v for k, v in node.items() if k != "allOf"})
        return merged
    return node


def example(schema: dict, node: dict) -> object:
    """A plausible valid value for a schema node: the base each wrong field is put in."""
    node = _resolve(schema, node)
    if "default" in node:
        return node["default"]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        required = node.get("required", [])
        return {name: example(schema, sub) for name, sub in node.get("properties", {}).items()
                if name in required}
    if kind == "array":
        return [example(schema, node.get("items", {}))]
    if kind == "integer":
        return max(1, node.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if node.get("format") == "decimal":
        return "1.00"
    if node.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    return "badinput"


def _wrong_for(node: dict) -> list[object]:
    kind = node.get("type")
    common: list[object] = [None, [], {}, True, 10**30]
    by_kind: dict[str | None, list[object]] = {
        "string": [123, -1.5, "", "\u0000", "x" * 100_000, "\ud7ff\U0010ffff"],
        "integer": ["x", "1", 1.5, -1, 0, 2**63, -(2**63) - 1, 1e308, "NaN"],
        "number": ["x", -1e308, "Infinity"],
        "boolean": ["yes", 2, "true", 0],
        "array": ["x", [None], [[[]]], [{"a": 1}] * 500, ["x"] * 10],
        "object": ["x", [1], {"": None}],
    }
    if node.get("format") == "date-time":
        by_kind["string"] += ["2026-13-45T99:99:99Z", "yesterday", "0000-00-00",
                              "9999-12-31T23:59:59+25:00", "-1"]
    if node.get("format") == "decimal":
        by_kind["string"] += ["1e400", "NaN", "-1", "99999999999999", "0.00001"]
    return common + by_kind.get(kind, by_kind["string"])


def _query_values(param: dict) -> list[str]:
    values = ["", "%ff%fe", "%00", "x" * 5000, "-1", "99999999999999999999",
              "2026-13-45T25:61:00", "24h%00", "%E2%80%AE"]
    if param["name"] == "org":
        values.append("another-org")
    return values


def api_cases(schema: dict, keys: Keys) -> Iterator[Case]:
    admin = [bearer(keys.admin)]
    for path, operations in schema["paths"].items():
        concrete = path
        for param in ("{provider_id}", "{key_id}", "{route_id}", "{limit_id}",
                      "{budget_id}"):
            concrete = concrete.replace(param, "999999999")
        concrete = _fill_path(concrete)
        ids = [p for p in _path_params(operations)]
        # Methods the path does not serve.
        for method in _METHODS:
            if method not in operations:
                yield Case(f"{method.upper()} {path}", request_bytes(
                    method.upper(), concrete, [*admin, JSON], b"{}"), True)
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            label = f"{method.upper()} {path}"
            upper = method.upper()
            # Who is calling.
            for name, headers in [("no-key", []), ("bad-key", [bearer("cog_nope")]),
                                  ("latin1-key", [(b"X-API-Key", b"cog_\xff")]),
                                  ("garbage-session", [(b"Cookie", b"sessionid=\xff;;=;")])]:
                yield Case(f"{label} auth {name}",
                           request_bytes(upper, concrete, [*headers, JSON], b"{}"), True)
            # Managing takes an admin-scoped key; some reads take any key.
            yield Case(f"{label} proxy-scope", request_bytes(
                upper, concrete, [bearer(keys.proxy_of_admin_org), JSON], b"{}"),
                method != "get")
            # Path ids that are not there, or not numbers a database column can hold.
            for param in ids:
                for value in ("0", "999999999", str(2**63), str(10**30), "-1", "abc", "%ff",
                              "1.5", "1%00"):
                    target = _fill_path(path.replace("{" + param + "}", value))
                    yield Case(f"{label} {param}={value}", request_bytes(
                        upper, target, [*admin, JSON], b"{}"), True)
            # Query parameters.
            for param in operation.get("parameters", []):
                if param["in"] != "query":
                    continue
                for value in _query_values(param):
                    yield Case(f"{label} ?{param['name']}={_short(value)}", request_bytes(
                        upper, f"{concrete}?{param['name']}={value}", [*admin, JSON],
                        b"{}" if method != "get" else b""), param["name"] == "org"
                        and value == "another-org")
            yield Case(f"{label} many-query-params", request_bytes(
                upper, concrete + "?" + "period=7d&" * 1500, admin), False)
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            yield from _api_body_cases(schema, label, upper, concrete, body["schema"], admin)


def _api_body_cases(schema: dict, label: str, method: str, target: str, body_schema: dict,
                    admin: list[tuple[bytes, bytes]]) -> Iterator[Case]:
    def send(name: str, body: bytes, refused: bool, content_type: bytes = b"application/json"
             ) -> Case:
        return Case(f"{label} {name}", request_bytes(
            method, target, [*admin, (b"Content-Type", content_type)], body), refused)

    node = _resolve(schema, body_schema)
    # Refused whatever the operation: not JSON, not an object, over the size limit.
    for name, body in [("open-brace", b"{"), ("nan", b'{"x": NaN}'),
                       ("invalid-utf8", b'{"name": "\xff\xfe"}'),
                       ("raw-nul", b'{"name": "a\x00b"}'),
                       ("nested-100k", b"[" * 100_000 + b"]" * 100_000),
                       ("nested-objects-5000", b'{"a":' * 5000 + b"1" + b"}" * 5000),
                       ("3-mib", b'{"name": "' + b"x" * (3 * 1024 * 1024) + b'"}'),
                       ("null", b"null"), ("array", b"[]"), ("string", b'"x"'),
                       ("number", b"7")]:
        yield send(name, body, True)
    # JSON objects the operation may take, ignoring what it does not know.
    for name, body in [("lone-surrogate", b'{"name": "\\ud800"}'),
                       ("nested-in-a-field-900", b'{"name":' + b"[" * 900 + b"]" * 900 + b"}"),
                       ("huge-number", b'{"name": 1' + b"0" * 5000 + b"}")]:
        yield send(name, body, False)
    yield send("empty", b"", bool(node.get("required")))
    # Only JSON is read.
    yield send("text-plain", b"{}", True, b"text/plain")
    yield send("form-garbage", b"%ff=%fe&&&==", True, b"application/x-www-form-urlencoded")
    yield send("multipart-garbage", b"--x\r\n\r\n--", True, b"multipart/form-data; boundary=x")
    yield send("multipart-no-boundary", b"abc", True, b"multipart/form-data")
    yield send("content-type-charset-bogus", b"{}", False,
               b"application/json; charset=bogus-42")
    base = example(schema, node)
    assert isinstance(base, dict)
    yield send("duplicate-keys", b'{"name": 1, "name": 2}', False)
    yield send("unknown-fields", _json({**base, "frobnicate": [1], "": None}), False)
    for field, sub in node.get("properties", {}).items():
        sub = _resolve(schema, sub)
        for value in _wrong_for(sub):
            yield send(f"{field}={_short(value)}", _json({**base, field: value}), False)
        if sub.get("type") == "array":
            item = _resolve(schema, sub.get("items", {}))
            if item.get("type") == "object" or "properties" in item:
                item_base = example(schema, item)
                assert isinstance(item_base, dict)
                for inner, inner_node in item.get("properties", {}).items():
                    for value in _wrong_for(_resolve(schema, inner_node))[:8]:
                        yield send(f"{field}[0].{inner}={_short(value)}", _json(
                            {**base, field: [{**item_base, inner: value}]}), False)


def _path_params(operations: dict) -> list[str]:
    names = []
    for operation in operations.values():
        if isinstance(operation, dict):
            for param in operation.get("parameters", []):
                if param["in"] == "path" and param["name"] not in names:
                    names.append(param["name"])
    return names


def _fill_path(path: str) -> str:
    """Any path parameter not filled in yet gets an id that is nobody's."""
    while "{" in path:
        start = path.index("{")
        path = path[:start] + "999999999" + path[path.index("}", start) + 1:]
    return path


# --- Below the application: what the HTTP parser refuses --------------------------------

def http_cases(keys: Keys) -> Iterator[Case]:
    key = b"Bearer " + keys.refused.encode()
    body = _json(GOOD_BODIES["chat/completions"])
    path = b"/v1/chat/completions"

    def raw(name: str, data: bytes, refused: bool = True) -> Case:
        # Framing the server may read otherwise than we meant: a connection of its own.
        return Case(f"http {name}", data, refused, last_on_connection=True)

    yield raw("garbage", b"GARBAGE\r\n\r\n")
    yield raw("binary", bytes(range(256)) + b"\r\n\r\n")
    yield raw("no-version", b"GET /health\r\n\r\n", False)
    yield raw("http-9.9", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n")
    yield raw("space-in-target", b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n")
    yield raw("nul-in-target", b"GET /health\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    yield raw("bad-method-token", b"G(E)T /health HTTP/1.1\r\nHost: x\r\n\r\n")
    yield raw("header-without-colon", b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n")
    yield raw("space-before-colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", False)
    yield raw("nul-in-header", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: "
              + key + b"\x00\r\nContent-Length: 2\r\n\r\n{}")
    yield raw("bare-cr-in-header", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2"
              b"\r\nAuthorization: " + key + b"\r\nContent-Length: 2\r\n\r\n{}")
    yield raw("crlf-injection-in-value",
              b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nX-Cognitude-Cache-Namespace: a\r\n"
              b" \r\nAuthorization: " + key + b"\r\nContent-Length: 2\r\n\r\n{}")
    yield raw("obs-fold", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", False)
    yield raw("negative-content-length", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
              b"Authorization: " + key + b"\r\nContent-Length: -1\r\n\r\n{}")
    yield raw("content-length-abc", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: abc\r\n\r\n{}")
    yield raw("two-content-lengths", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x")
    yield raw("content-length-and-chunked", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    yield raw("bad-chunk-size", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
              b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    yield raw("overflowing-chunk-size", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\n{}\r\n0\r\n\r\n")
    yield raw("content-length-overflow", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: " + b"9" * 40 + b"\r\n\r\n{}")
    # Oversized heads: one huge header, many headers, a huge target.
    yield Case("http header-100-kib", request_bytes(
        "POST", path, [(b"Authorization", key), JSON, (b"X-Big", b"a" * 100 * 1024)], body),
        True)
    yield Case("http header-1-mib", request_bytes(
        "GET", "/health", [(b"X-Big", b"a" * 1024 * 1024)]), True)
    yield Case("http 5000-headers", request_bytes(
        "GET", "/health", [(b"X-H%d" % i, b"v") for i in range(5000)]), False)
    yield Case("http target-100-kib", request_bytes("GET", "/v1/" + "a" * 100 * 1024, []),
               True)


def build(*, keys: Keys, schema: dict) -> list[Case]:
    cases = [*v1_cases(keys), *cache_and_health_cases(keys), *api_cases(schema, keys),
             *http_cases(keys)]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "two cases share a name"
    return cases


def _short(value: object) -> str:
    text = value.decode("latin-1") if isinstance(value, bytes) else repr(value)
    return quote(text[:40] + ("..." if len(text) > 40 else ""), safe=" =[]{}:,'\"")
