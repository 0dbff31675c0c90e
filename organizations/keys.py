"""API key format: `cog_` + 32 random base62 characters + a 6-character checksum.

The checksum (CRC32, base62) lets a typo or a forged key be refused before any
database query, the way GitHub's tokens work. 32 base62 characters carry 190 bits.
"""

import hashlib
import secrets
import zlib

PREFIX = "cog_"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
# What is stored and shown: "cog_" and the first 8 random characters.
LOOKUP_PREFIX_LENGTH = len(PREFIX) + 8

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALPHABET_SET = frozenset(ALPHABET)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate_key() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return f"{PREFIX}{body}{_checksum(body)}"


def is_well_formed(raw: str) -> bool:
    """True when the key has the shape of a Cognitude key (checksum not checked)."""
    return (
        len(raw) == KEY_LENGTH
        and raw.startswith(PREFIX)
        and _ALPHABET_SET.issuperset(raw[len(PREFIX):])
    )


def has_valid_checksum(raw: str) -> bool:
    body = raw[len(PREFIX):len(PREFIX) + BODY_LENGTH]
    return secrets.compare_digest(_checksum(body), raw[len(PREFIX) + BODY_LENGTH:])


def hash_key(raw: str) -> str:
    # The key is 190 random bits, so a plain SHA-256 cannot be brute-forced; no salt needed.
    return hashlib.sha256(raw.encode()).hexdigest()


def lookup_prefix(raw: str) -> str:
    return raw[:LOOKUP_PREFIX_LENGTH]


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The raw key from `Authorization: Bearer <key>` (the OpenAI SDK) or `X-API-Key`.

    An Authorization header of another scheme (a proxy's Basic auth, say) does not hide
    an X-API-Key header."""
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return x_api_key.strip() if x_api_key is not None else None
