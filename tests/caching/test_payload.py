"""The bytes of a cache entry: what a hit answers with, in Redis and in CacheEntry.payload.

Cold-tier entries are kept indefinitely, so the layout is a stored format: entries
written by an older release must still read, and anything that is not an entry must be
refused as CorruptEntry (the lookup then treats it as a miss), never half-read."""

import random

import pytest

from caching.payload import CachedResponse, CorruptEntry, pack, unpack

JSON_BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}'
# Bodies hold spaces and newlines: only the first line is the header.
SSE_BODY = b'data: {"choices":[{"delta":{"content":"a b"}}]}\n\ndata: {"x": 1}\n\n'
USAGE_EVENT = b'data: {"choices":[],"usage":{"prompt_tokens":11}}\n\n'

# Every field a different value, so a swap of two fields cannot go unnoticed.
ENTRY = CachedResponse(org_id=42, prompt_tokens=11, completion_tokens=7,
                       json_body=JSON_BODY, sse_body=SSE_BODY, usage_event=USAGE_EVENT)


def test_it_round_trips_every_field():
    assert unpack(pack(ENTRY)) == ENTRY


def test_it_round_trips_an_answer_that_came_as_json_only():
    entry = CachedResponse(org_id=3, prompt_tokens=0, completion_tokens=0,
                           json_body=JSON_BODY, sse_body=b"", usage_event=b"")

    assert unpack(pack(entry)) == entry


def test_it_keeps_the_stored_layout():
    # Entries already in PostgreSQL were written this way; changing the layout must
    # come with a way to read them (or a migration), not silently turn them into misses.
    packed = pack(CachedResponse(org_id=7, prompt_tokens=5, completion_tokens=2,
                                 json_body=b"{}", sse_body=b"data: 1\n\n", usage_event=b"u"))

    assert packed == b"7 5 2 2 9 1\n{}data: 1\n\nu"
    assert unpack(b"7 5 2 2 9 1\n{}data: 1\n\nu").sse_body == b"data: 1\n\n"


def test_it_round_trips_the_model_that_answered():
    # A route's answer comes from a model other than the name asked for: its hits are
    # priced on the model that made the answer.
    entry = CachedResponse(org_id=7, prompt_tokens=5, completion_tokens=2, json_body=b"{}",
                           sse_body=b"", usage_event=b"", model="gpt-4o-mini")

    assert pack(entry) == b"7 5 2 2 0 0 11\n{}gpt-4o-mini"
    assert unpack(pack(entry)) == entry


def test_it_reads_entries_written_before_the_model_was_kept():
    assert unpack(b"7 5 2 2 9 1\n{}data: 1\n\nu").model == ""


def test_it_answers_with_the_exact_bytes_it_was_given():
    # A hit returns these slices as the response body: no re-serialisation.
    entry = unpack(pack(ENTRY))

    assert entry.json_body == JSON_BODY
    assert entry.sse_body + entry.usage_event == SSE_BODY + USAGE_EVENT


@pytest.mark.parametrize("cut", range(1, len(pack(ENTRY))))
def test_it_refuses_a_truncated_entry(cut):
    with pytest.raises(CorruptEntry):
        unpack(pack(ENTRY)[:cut])


def test_it_refuses_an_entry_with_bytes_after_its_end():
    with pytest.raises(CorruptEntry):
        unpack(pack(ENTRY) + b"x")


@pytest.mark.parametrize("raw", [
    b"",
    b"\n",
    b"not a header\n{}",
    b"7 5 2 2 9\n{}data: 1\n\n",  # a field missing
    b"7 5 2 2 9 1 0 0\n{}data: 1\n\nu",  # a field too many
    b"7 5 2 x 9 1\n{}data: 1\n\nu",
    b"7 5 2 2 9 1",  # a header and nothing else, not even its newline
    b'{"id": "chatcmpl-1", "object": "chat.completion"}',  # a bare JSON answer
    b"data: [DONE]\n\n",
    b"\xff\xfe\x00 garbage \x00\n",
], ids=["empty", "newline", "words", "5-fields", "8-fields", "not-a-number", "no-newline",
        "json", "sse", "binary"])
def test_it_refuses_bytes_that_are_not_an_entry(raw):
    with pytest.raises(CorruptEntry):
        unpack(raw)


def test_it_refuses_a_header_with_negative_lengths():
    # The lengths add up (-2 + 2 + 0 == 0 bytes of body), but no slice of the body is
    # the answer: reading it would serve a fragment of the header as the response.
    with pytest.raises(CorruptEntry):
        unpack(b"7 5 2 -2 2 0\n")


def test_it_refuses_random_bytes_with_corrupt_entry_only():
    # Whatever a restored dump or another program left under our key, the lookup sees
    # CorruptEntry (a miss), never another exception (a 500).
    rng = random.Random(9)
    for _ in range(2000):
        raw = rng.randbytes(rng.randrange(0, 64))
        with pytest.raises(CorruptEntry):
            unpack(raw)
