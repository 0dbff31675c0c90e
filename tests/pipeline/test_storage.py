"""How the pipeline's tasks store a batch: an event the database cannot hold is set
aside (a dead letter), never the batch it came in; text PostgreSQL cannot hold (NUL) is
made storable, the cached bytes are not touched."""

import base64
import logging

import orjson
from django.utils import timezone

from analytics.models import RequestLog
from analytics.tasks import request_logs_store
from caching.events import CacheEntryEvent
from caching.models import CacheEntry
from caching.tasks import cache_entries_store
from pipeline.models import DeadLetter
from tests.analytics.helpers import make_event
from tests.analytics.test_metrics import Samples, samples_of, value

SECRET = "tenant-secret-7f3a"


def make_entry_event(org, n: int, **overrides) -> CacheEntryEvent:
    """A cache-entry event as caching.services.cache_store sends it."""
    return CacheEntryEvent(**{
        "org_id": org.pk,
        "key_hash": f"{n:064x}",
        "endpoint": "chat/completions",
        "model": "gpt-4o",
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"q{n}"}]},
        "payload": base64.b64encode(b"1 2 3 {}").decode(),
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "created_at": timezone.now(),
        "expires_at": None,
        **overrides,
    })


def delivered(events: list) -> list[dict]:
    """Events as their task receives them: serialised and read back, as by a worker."""
    return orjson.loads(orjson.dumps(events))


def metrics(client) -> Samples:
    """This process's /metrics (the tasks run here)."""
    return samples_of(client.get("/metrics").content.decode())


def test_it_stores_a_request_record_with_a_nul_and_the_rest_of_its_batch(world):
    innocent = [make_event(org_id=world.b.org.pk) for _ in range(30)]
    nul = make_event(org_id=world.a.org.pk, model_requested=f"gpt-4o\x00{SECRET}",
                     model_used="gpt-4o\x00", error_type="\x00")

    assert request_logs_store(delivered([*innocent[:10], nul, *innocent[10:]])) == 31

    assert RequestLog.objects.filter(organization=world.b.org).count() == 30
    record = RequestLog.objects.get(request_id=nul.request_id)
    assert record.model_requested == f"gpt-4o\ufffd{SECRET}"
    assert (record.model_used, record.error_type) == ("gpt-4o\ufffd", "\ufffd")
    assert not DeadLetter.objects.exists()


def test_it_stores_a_cache_entry_with_a_nul_byte_exact_and_the_rest_of_its_batch(world):
    payload = b"1 2 3 {\"content\":\"a\\u0000b\"}\x00\xff"
    innocent = [make_entry_event(world.b.org, n) for n in range(30)]
    nul = make_entry_event(
        world.a.org, 99, model="gpt-4o\x00",
        request={"model": "gpt-4o\x00", "messages": [
            {"role": "user", "content": f"{SECRET}\x00", "name\x00": ["\x00", 1, None]}]},
        payload=base64.b64encode(payload).decode(),
    )

    assert cache_entries_store(delivered([*innocent[:10], nul, *innocent[10:]])) == 31

    assert CacheEntry.objects.filter(organization=world.b.org).count() == 30
    entry = CacheEntry.objects.get(organization=world.a.org)
    assert bytes(entry.payload) == payload
    assert entry.model == "gpt-4o\ufffd"
    assert entry.request == {"model": "gpt-4o\ufffd", "messages": [
        {"role": "user", "content": f"{SECRET}\ufffd", "name\ufffd": ["\ufffd", 1, None]}]}


def test_it_sets_aside_an_event_the_database_refuses_and_writes_the_others(
        world, caplog, admin_client):
    before = metrics(admin_client)
    innocent = [make_event(org_id=world.b.org.pk) for _ in range(30)]
    # An upstream may claim any usage; the column holds at most 2**31 - 1.
    too_big = make_event(org_id=world.a.org.pk, prompt_tokens=2**31,
                         model_requested=SECRET)
    malformed = {"request_id": "x" * 32, "org_id": world.a.org.pk, "model_requested": SECRET}

    with caplog.at_level(logging.INFO):
        stored = request_logs_store(delivered([*innocent[:7], too_big, *innocent[7:20],
                                               malformed, *innocent[20:]]))

    assert stored == 30
    assert RequestLog.objects.filter(organization=world.b.org).count() == 30
    assert not RequestLog.objects.filter(organization=world.a.org).exists()
    letters = {letter.error: letter for letter in DeadLetter.objects.all()}
    assert sorted(letters) == ["DataError", "KeyError"]
    assert all(letter.kind == "request_log" for letter in letters.values())
    assert orjson.loads(bytes(letters["DataError"].event)) == delivered([too_big])[0]
    assert orjson.loads(bytes(letters["KeyError"].event)) == malformed
    assert value(metrics(admin_client), "cognitude_events_dead_lettered_total",
                 kind="request_log") - value(before, "cognitude_events_dead_lettered_total",
                                              kind="request_log") == 2
    assert "set aside" in caplog.text
    assert SECRET not in caplog.text

    # Delivered again (a worker died before acknowledging it): nothing new set aside.
    request_logs_store(delivered([too_big, malformed]))
    assert DeadLetter.objects.count() == 2

    page = admin_client.get("/admin/pipeline/deadletter/")
    assert page.status_code == 200
    assert b"DataError" in page.content and b"KeyError" in page.content
