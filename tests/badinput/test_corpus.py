"""The bad-input corpus against a real gateway: every malformed request over a socket,
never a 5xx, always the error shape, nothing upstream for what is refused, and the
process as healthy and about as big afterwards as before.

The gateway runs as operators run it (uvicorn, httptools, the project's HTTP protocol
class) with the fake upstream as every tenant's provider.
"""

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from organizations.models import ApiKey
from organizations.services import api_key_create
from tests.badinput import corpus
from tests.badinput.wire import Answer, Connection, request_bytes
from tests.conftest import TEST_REDIS_URL, make_tenant, wait_for_quiet_writes
from tests.live import HOST, start_gateway
from tests.workers import wait_until

# Keep-alive connections sending the corpus at once: enough to overlap the gateway's
# database and upstream waits, few enough to leave the other test worker its core.
CONNECTIONS = 8
# Allowed growth of the gateway's resident memory over the whole corpus (it holds no
# request once answered; the slack is allocator and cache warm-up).
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def problem_with(case: corpus.Case, answer: Answer) -> str | None:
    """What is wrong with the answer to a case, or None."""
    if answer.status == 0:
        return "the connection was dropped without an answer"
    if answer.status == -1:
        return "no answer in time"
    if answer.status >= 500:
        return f"server error {answer.status}: {answer.body[:200]!r}"
    if case.refused and not 400 <= answer.status < 500:
        return f"expected a refusal, got {answer.status}: {answer.body[:200]!r}"
    if answer.status >= 400 and case.shape == "openai":
        if not answer.headers.get("content-type", "").startswith("application/json"):
            return f"{answer.status} as {answer.headers.get('content-type')}: {answer.body[:200]!r}"
        try:
            body = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return f"{answer.status} with a body that is not JSON: {answer.body[:200]!r}"
        error = body.get("error") if isinstance(body, dict) else None
        if list(body) != ["error"] or not isinstance(error, dict) or set(error) != {
                "message", "type", "param", "code"} or not isinstance(error["message"], str) \
                or not isinstance(error["type"], str):
            return f"{answer.status} not in the error shape: {answer.body[:200]!r}"
    return None


async def send_all(port: int, cases: list[corpus.Case]) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(cases)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(cases)):
        queue.put_nowait(index)

    async def worker() -> None:
        connection = Connection(HOST, port)
        try:
            while not queue.empty():
                index = queue.get_nowait()
                case = cases[index]
                answers[index] = await connection.exchange(case.raw, head=case.head)
                if answers[index].status <= 0 or case.last_on_connection:
                    await connection.close()
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return [answer for answer in answers if answer is not None]


def get(port: int, target: str, headers: list[tuple[bytes, bytes]]) -> Answer:
    async def once() -> Answer:
        connection = Connection(HOST, port)
        try:
            return await connection.exchange(request_bytes("GET", target, headers))
        finally:
            await connection.close()
    return asyncio.run(once())


@pytest.fixture(scope="module")
def badinput_gateway(django_db_setup, django_db_blocker):
    """A gateway of this module's own, so its failed authentications (the corpus sends
    hundreds) count against nobody else's address, and its memory is the corpus's."""
    with django_db_blocker.unblock():
        gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL,
                                 "COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE": "0",
                                 # An unknown request id is a 404 almost at once, not
                                 # after waiting for its record to land.
                                 "COGNITUDE_FEEDBACK_WAIT_SECONDS": "0.01"},
                                args=("--http", "cognitude.server:HttpProtocol"))
    yield gateway
    gateway.stop()


def test_it_survives_the_bad_input_corpus(badinput_gateway, live_world, fake_upstream):
    admin_org = make_tenant("Org API", live_world.charlie, fake_upstream.api_base)
    keys = corpus.Keys(
        refused=live_world.a.raw_key,
        passing=live_world.b.raw_key,
        admin=api_key_create(organization=admin_org.org, name="admin",
                             scope=ApiKey.Scope.ADMIN).raw_key,
        proxy_of_admin_org=admin_org.raw_key,
    )
    port = int(badinput_gateway.url.rsplit(":", 1)[1])
    schema_answer = get(port, "/api/schema/?format=json", [corpus.bearer(keys.admin)])
    assert schema_answer.status == 200
    cases = corpus.build(keys=keys, schema=json.loads(schema_answer.body))
    assert len(cases) >= 1000
    pid = badinput_gateway.process.pid
    # Warm the process up (first database connections, first upstream session) so the
    # memory measured after is the corpus's, not the start's.
    for case in cases[:50]:
        asyncio.run(send_all(port, [case]))
    before = rss(pid)

    started = time.monotonic()
    answers = asyncio.run(send_all(port, cases))
    elapsed = time.monotonic() - started

    problems = [f"{case.name}: {problem}" for case, answer in zip(cases, answers, strict=True)
                if (problem := problem_with(case, answer)) is not None]
    statuses = Counter(answer.status for answer in answers)
    report = (f"{len(cases)} cases in {elapsed:.1f} s, "
              f"{sum(case.refused for case in cases)} to be refused; statuses "
              f"{dict(sorted(statuses.items()))}; RSS {before >> 20} -> {rss(pid) >> 20} MiB")
    print(report)
    if os.environ.get("BADINPUT_REPORT"):
        Path(os.environ["BADINPUT_REPORT"]).write_text(report + "\n" + "\n".join(problems))
    assert not problems, f"{len(problems)} problems ({report}):\n" + "\n".join(problems[:60])
    # Nothing refused went upstream: the refused tenant's provider key was never used.
    assert fake_upstream.calls_with(live_world.a.provider_key) == 0
    # Still healthy, and no bigger than the corpus can explain.
    health = get(port, "/health", [])
    assert health.status == 200, health.body
    assert orjson.loads(health.body)["status"] in ("healthy", "degraded")
    assert rss(pid) - before < RSS_GROWTH_LIMIT
    assert badinput_gateway.process.poll() is None
    wait_for_quiet_writes()


def test_it_keeps_no_database_connection_per_api_request(badinput_gateway, live_world):
    # Django runs each request in a thread of its own: a connection kept past the
    # request was never used again, and a few concurrent clients of /api exhausted
    # PostgreSQL's max_connections.
    from django.db import connection

    def gateway_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]

    port = int(badinput_gateway.url.rsplit(":", 1)[1])
    request = request_bytes("GET", "/api/keys", [corpus.bearer(live_world.a.raw_key)])
    before = gateway_connections()

    answers = asyncio.run(send_all(port, [corpus.Case(f"keys {i}", request, False)
                                          for i in range(80)]))

    assert {answer.status for answer in answers} == {403}  # a proxy key: not managing
    # A closed connection's server process takes a moment to leave pg_stat_activity.
    wait_until(lambda: gateway_connections() - before <= 2, timeout=5,
               what="the requests' connections closed")
