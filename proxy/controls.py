"""Per-request cache controls: `Cache-Control` and the namespace header."""

from dataclasses import dataclass

_NAMESPACE_MAX = 64
# RFC 9111 1.2.2: a max-age too big to represent counts as 2**31 seconds. Bigger
# values overflow Redis's EX (which trips the hot tier for everyone) and timedelta.
_MAX_AGE_CAP = 2**31


@dataclass(frozen=True, slots=True)
class CacheControls:
    no_cache: bool = False  # skip the lookup, ask upstream, refresh the entry
    no_store: bool = False  # do not store this answer
    max_age: int | None = None  # TTL for this entry, both tiers
    namespace: str = ""


NO_CONTROLS = CacheControls()


def parse_cache_controls(cache_control: str, namespace: str) -> CacheControls | str:
    """The controls a request asks for, or the message saying why they are invalid."""
    if not cache_control and not namespace:
        return NO_CONTROLS
    no_cache = no_store = False
    max_age = None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name in ("max-age", "s-maxage"):
            # RFC 9111 5.2: senders must not quote it, recipients should accept it quoted.
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            # isascii: "²" is a digit to isdigit() but not to int().
            if not (value.isascii() and value.isdigit()) or int(value) == 0:
                return "Cache-Control max-age must be a positive whole number of seconds"
            max_age = min(int(value), _MAX_AGE_CAP)
    if len(namespace) > _NAMESPACE_MAX or not namespace.isprintable():
        return f"X-Cognitude-Cache-Namespace must be at most {_NAMESPACE_MAX} printable characters"
    return CacheControls(no_cache, no_store, max_age, namespace)
