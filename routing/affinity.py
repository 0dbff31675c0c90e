"""Which provider made a Responses API answer, so that a request continuing it
(`previous_response_id`) goes back to the one provider that knows it.

Remembered for COGNITUDE_RESPONSE_AFFINITY_SECONDS in the hot-tier Redis (scoped by
organization, like every cache key), else in a bounded in-process map. Losing an entry
(eviction, Redis away) sends the continuation along the route as usual: at worst that
provider answers that it does not know the previous response.
"""

import time
from collections import OrderedDict

from django.conf import settings
from redis.exceptions import RedisError

from routing.shared import shared_redis

_MAX_LOCAL = 100_000
_local: "OrderedDict[tuple[int, str], tuple[float, int]]" = OrderedDict()


def _key(org_id: int, response_id: str) -> str:
    return f"cognitude:{{{org_id}}}:response:{response_id}"


async def response_provider_remember(*, org_id: int, response_id: str,
                                     provider_id: int) -> None:
    """Note that `provider_id` made the response `response_id`."""
    ttl = settings.COGNITUDE_RESPONSE_AFFINITY_SECONDS
    redis = shared_redis()
    if redis.usable:
        try:
            await redis.client.set(_key(org_id, response_id), provider_id, ex=ttl)
            return
        except (RedisError, OSError) as exc:
            redis.trouble(exc)
    _local[(org_id, response_id)] = (time.monotonic() + ttl, provider_id)
    _local.move_to_end((org_id, response_id))
    while len(_local) > _MAX_LOCAL:
        _local.popitem(last=False)


async def response_provider_of(*, org_id: int, response_id: str) -> int | None:
    """The id of the provider that made `response_id`, if it is remembered."""
    redis = shared_redis()
    if redis.usable:
        try:
            found = await redis.client.get(_key(org_id, response_id))
            if found is not None:
                return int(found)
        except (RedisError, OSError) as exc:
            redis.trouble(exc)
    local = _local.get((org_id, response_id))
    if local is None or local[0] <= time.monotonic():
        return None
    return local[1]
