"""The cache key: which requests are "the same request"."""

import hashlib

import orjson

# Bump when the canonical form changes, so old entries are never read with new meaning.
SCHEMA_VERSION = 1

# Fields that do not change the answer. Everything else does, including fields this
# list has never heard of: a new parameter can never make two different requests share
# an answer, at worst it costs a miss.
_IGNORED_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier",
     "safety_identifier", "prompt_cache_key", "parallel_tool_calls_hint"}
)


def request_hash(*, endpoint: str, body: dict, namespace: str = "") -> str:
    """SHA-256 of the canonical form of a request (sorted keys, ignored fields dropped)."""
    canonical = {k: v for k, v in body.items() if k not in _IGNORED_FIELDS}
    material = orjson.dumps(
        [SCHEMA_VERSION, endpoint, namespace, canonical], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(material).hexdigest()


def redis_key(org_id: int, key_hash: str) -> str:
    # `llm_cache:{org_id}:{hash}` as the seed names it; the braces are kept literally so
    # that on Redis Cluster all of one organization's keys share a slot and the
    # multi-key scripts below stay legal.
    return f"llm_cache:{{{org_id}}}:{key_hash}"


def redis_hits_key(org_id: int) -> str:
    return f"llm_cache:{{{org_id}}}:hits"


def redis_index_key(org_id: int) -> str:
    return f"llm_cache:{{{org_id}}}:index"


def redis_lock_key(org_id: int, key_hash: str) -> str:
    return f"llm_cache:{{{org_id}}}:lock:{key_hash}"
