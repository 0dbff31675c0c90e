"""The limits' pipelined Redis client against a real redis-server: answers in order
however many are in flight, timeouts that keep that order, a lost connection that fails
what was waiting and comes back, scripts sent in full when the server lacks them."""

import asyncio
import os
import signal

import pytest
import redis as redis_lib

from ratelimit.resp import RespClient, RespError, Script
from tests.live import start_redis


@pytest.fixture
def server():
    started = start_redis()
    yield started
    started.stop()


def test_it_answers_many_commands_in_flight_in_order(server):
    async def main():
        client = RespClient(server.url, timeout=2)
        answers = await asyncio.gather(*(client.call("ECHO", str(i)) for i in range(500)))
        await client.close()
        return answers

    assert asyncio.run(main()) == [str(i).encode() for i in range(500)]


def test_it_uses_the_database_of_the_url_and_reports_errors(server):
    async def main():
        client = RespClient(f"redis://127.0.0.1:{server.port}/3", timeout=2)
        await client.call("SET", "where", "three")
        with pytest.raises(RespError, match="wrong number of arguments"):
            await client.call("GET")
        await client.close()

    asyncio.run(main())
    assert redis_lib.Redis(port=server.port, db=3).get("where") == b"three"
    assert redis_lib.Redis(port=server.port, db=0).get("where") is None


def test_it_times_out_without_losing_the_order(server):
    async def main():
        client = RespClient(server.url, timeout=0.3)
        await client.call("PING")
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                await client.call("ECHO", "late")
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        # The late answer arrives and is dropped: the next command gets its own.
        answer = await client.call("ECHO", "next")
        await client.close()
        return answer

    assert asyncio.run(main()) == b"next"


def test_it_fails_what_was_waiting_when_the_server_goes_and_reconnects(server):
    async def main():
        client = RespClient(server.url, timeout=2)
        await client.call("PING")
        os.kill(server.process.pid, signal.SIGSTOP)
        waiting = asyncio.ensure_future(client.call("ECHO", "lost"))
        await asyncio.sleep(0.1)
        server.process.kill()
        server.process.wait()
        with pytest.raises(ConnectionError):
            await waiting
        with pytest.raises(OSError):
            await client.call("PING")  # nobody listens
        revived = start_redis(server.port)
        try:
            return await client.call("PING")
        finally:
            await client.close()
            revived.stop()

    assert asyncio.run(main()) == b"PONG"


def test_it_sends_a_script_in_full_when_the_server_lacks_it(server):
    async def main():
        client = RespClient(server.url, timeout=2)
        script = Script(client, "return {KEYS[1], ARGV[1]}")
        first = await script(["k{1}"], ("a",))
        await client.call("SCRIPT", "FLUSH")
        again = await script(["k{1}"], ("b",))
        await client.call("SCRIPT", "FLUSH")
        submitted = await script.submit(["k{1}"], ("c",))
        await client.close()
        return first, again, submitted

    assert asyncio.run(main()) == ([b"k{1}", b"a"], [b"k{1}", b"b"], [b"k{1}", b"c"])
