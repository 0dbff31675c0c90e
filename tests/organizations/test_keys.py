"""The API key format: `cog_` + 32 base62 characters + a 6-character checksum."""

import hashlib
import re

from organizations import keys

KEY_SHAPE = re.compile(r"cog_[0-9A-Za-z]{32}[0-9A-Za-z]{6}")


def flip(raw: str, index: int) -> str:
    """`raw` with the character at `index` replaced by another base62 character."""
    replacement = "a" if raw[index] != "a" else "b"
    return raw[:index] + replacement + raw[index + 1:]


def test_it_generates_keys_of_the_documented_shape():
    raw = keys.generate_key()

    assert KEY_SHAPE.fullmatch(raw)
    assert len(raw) == 42
    assert keys.is_well_formed(raw)
    assert keys.has_valid_checksum(raw)


def test_it_generates_a_different_key_every_time():
    generated = [keys.generate_key() for _ in range(2000)]

    assert len(set(generated)) == 2000
    # The stored lookup prefix must be unique too, or two keys would share a row lookup.
    assert len({keys.lookup_prefix(raw) for raw in generated}) == 2000


def test_it_uses_the_whole_alphabet_in_the_random_part():
    # A generator stuck on a few characters would carry far fewer than 190 bits.
    bodies = "".join(keys.generate_key()[4:36] for _ in range(200))

    assert set(bodies) == set(keys.ALPHABET)


def test_it_refuses_a_key_with_any_one_character_flipped():
    raw = keys.generate_key()

    for index in range(len("cog_"), len(raw)):
        flipped = flip(raw, index)
        assert keys.is_well_formed(flipped), index
        assert not keys.has_valid_checksum(flipped), f"flip at {index} went unnoticed"


def test_it_refuses_two_swapped_characters():
    raw = keys.generate_key()
    body = raw[4:36]
    i = next(i for i in range(31) if body[i] != body[i + 1])
    swapped_body = body[:i] + body[i + 1] + body[i] + body[i + 2:]

    assert not keys.has_valid_checksum("cog_" + swapped_body + raw[36:])


def test_it_tells_malformed_keys_apart():
    raw = keys.generate_key()

    assert not keys.is_well_formed("")
    assert not keys.is_well_formed(raw[:-1])
    assert not keys.is_well_formed(raw + "A")
    assert not keys.is_well_formed("sk_" + raw[3:])
    assert not keys.is_well_formed("COG_" + raw[4:])
    assert not keys.is_well_formed(raw[:10] + "-" + raw[11:])
    assert not keys.is_well_formed(raw[:10] + "é" + raw[11:])
    assert not keys.is_well_formed(raw[:10] + " " + raw[11:])


def test_it_stores_a_sha256_and_a_short_prefix():
    raw = keys.generate_key()

    assert re.fullmatch(r"[0-9a-f]{64}", keys.hash_key(raw))
    # The stored form of every key ever issued: changing it would lock every client out.
    assert keys.hash_key(raw) == hashlib.sha256(raw.encode()).hexdigest()
    assert keys.hash_key(raw) != keys.hash_key(flip(raw, 10))
    assert keys.lookup_prefix(raw) == raw[:12]
    assert raw[12:] not in keys.hash_key(raw)


def test_it_reads_a_bearer_token():
    raw = keys.generate_key()

    assert keys.key_from_headers(f"Bearer {raw}", None) == raw
    assert keys.key_from_headers(f"bearer {raw}", None) == raw
    assert keys.key_from_headers(f"BEARER   {raw}  ", None) == raw


def test_it_reads_the_x_api_key_header():
    raw = keys.generate_key()

    assert keys.key_from_headers(None, raw) == raw
    assert keys.key_from_headers(None, f" {raw} ") == raw


def test_it_prefers_authorization_over_x_api_key():
    first, second = keys.generate_key(), keys.generate_key()

    assert keys.key_from_headers(f"Bearer {first}", second) == first


def test_it_ignores_other_authorization_schemes():
    raw = keys.generate_key()

    assert keys.key_from_headers(f"Basic {raw}", None) is None
    assert keys.key_from_headers(f"Token {raw}", None) is None
    assert keys.key_from_headers(raw, None) is None


def test_it_falls_back_to_x_api_key_behind_another_scheme():
    raw = keys.generate_key()

    assert keys.key_from_headers("Basic dXNlcjpwYXNz", raw) == raw


def test_it_finds_no_key_without_headers():
    assert keys.key_from_headers(None, None) is None
    assert keys.key_from_headers("Bearer", None) == ""
    assert keys.key_from_headers("Bearer ", None) == ""
