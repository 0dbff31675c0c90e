"""`make run` as a newcomer meets it: bin/run-demo on the embedded defaults (SQLite in a
fresh var directory, the in-process hot tier, Celery tasks inline; no DATABASE_URL,
REDIS_URL or CELERY_BROKER_URL), used with what it prints: the demo key through the
official SDK, the demo login through the login page.

Marked `embedded`: `make test` runs these in their own pytest run, without the
services' environment; the main run leaves them out (pytest.ini)."""

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from fakeupstream.testing import free_port
from tests.conftest import FakeUpstream
from tests.live import HOST, PROJECT_DIR

pytestmark = pytest.mark.embedded

# What bin/run-demo gives the fake upstream as the demo organization's provider key.
DEMO_PROVIDER_KEY = "sk-demo-fake-upstream"
SERVICES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")


@dataclass
class Demo:
    process: subprocess.Popen
    output: Path
    url: str
    upstream: FakeUpstream
    key: str
    login_url: str
    username: str
    password: str

    def stop(self) -> None:
        """Ctrl-C, as in a terminal: the whole process group (the script, uvicorn and
        the fake upstream) gets SIGINT."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def printed(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    assert match, f"bin/run-demo did not print {pattern!r}:\n{text}"
    return match.group(1)


def run_demo(var_dir: Path, *, timeout: float = 90.0) -> Demo:
    """bin/run-demo on free ports, its state in var_dir; returns once it serves."""
    port, upstream_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if name not in SERVICES}
    env.update({"COGNITUDE_VAR_DIR": str(var_dir), "PORT": str(port),
                "FAKE_UPSTREAM_PORT": str(upstream_port)})
    output = var_dir / f"run-demo-{port}.out"
    with output.open("wb") as out:
        process = subprocess.Popen([sys.executable, "bin/run-demo"], cwd=PROJECT_DIR, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://{HOST}:{port}"
    upstream = FakeUpstream(f"http://127.0.0.1:{upstream_port}")
    deadline = time.monotonic() + timeout  # a fresh SQLite database is migrated first
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"bin/run-demo exited:\n{output.read_text()}")
        try:
            if (httpx.get(f"{url}/health", timeout=2).status_code == 200
                    and httpx.get(f"{upstream.url}/stats", timeout=2).status_code == 200):
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise TimeoutError(f"bin/run-demo did not start:\n{output.read_text()}")
        time.sleep(0.1)
    text = output.read_text()
    login = re.search(r"Dashboard.*\n\s+(\S+)\n\s+username: (\S+)\n\s+password: (\S+)", text)
    assert login, f"bin/run-demo printed no dashboard login:\n{text}"
    return Demo(process, output, url, upstream,
                key=printed(text, r"Demo API key.*\n\s+(cog_\S+)"),
                login_url=login.group(1), username=login.group(2), password=login.group(3))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    started = run_demo(tmp_path_factory.mktemp("var"))
    yield started
    started.stop()


def sdk(demo: Demo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{demo.url}/v1", api_key=demo.key, max_retries=0)


def ask(demo: Demo, content: str):
    raw = sdk(demo).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
    return raw.parse(), raw.headers


def log_in(demo: Demo, password: str) -> tuple[httpx.Response, httpx.Client]:
    """A browser's way in: the login page, its CSRF token, the form. Returns the form's
    answer and the browser (with its session cookie when the login worked)."""
    browser = httpx.Client(base_url=demo.url, timeout=10)
    page = browser.get(demo.login_url)
    assert page.status_code == 200
    token = printed(page.text, r'name="csrfmiddlewaretoken" value="([^"]+)"')
    response = browser.post(demo.login_url, data={
        "username": demo.username, "password": password, "csrfmiddlewaretoken": token})
    return response, browser


def logged_in(demo: Demo) -> httpx.Client:
    response, browser = log_in(demo, demo.password)
    assert response.status_code == 302, "the printed login was refused"
    assert "sessionid" in browser.cookies
    return browser


def summary_when(browser: httpx.Client, done, *, timeout: float = 15.0) -> dict:
    """The analytics summary once `done(summary)`: records are written in the background
    (inline tasks, fed by the event buffer every second)."""
    deadline = time.monotonic() + timeout
    while True:
        response = browser.get("/api/analytics/summary", params={"period": "24h"})
        assert response.status_code == 200, response.text
        summary = response.json()
        if done(summary) or time.monotonic() > deadline:
            return summary
        time.sleep(0.1)


def settled_summary(browser: httpx.Client, *, timeout: float = 15.0) -> dict:
    """The summary once two reads more than a flush (1 s) apart agree: the records of
    the module's earlier requests have all landed."""
    deadline = time.monotonic() + timeout
    summary = summary_when(browser, lambda s: True)
    while time.monotonic() < deadline:
        time.sleep(1.2)
        again = summary_when(browser, lambda s: True)
        if again["requests"] == summary["requests"]:
            return again
        summary = again
    return summary


def test_it_prints_a_key_a_login_page_and_the_demo_login(demo):
    assert demo.key.startswith("cog_")
    assert demo.login_url == f"{demo.url}/accounts/login/"
    assert demo.username == "demo"
    assert len(demo.password) >= 16


def test_it_answers_a_miss_then_a_hit_from_the_in_process_tier(demo):
    before = demo.upstream.calls_with(DEMO_PROVIDER_KEY)

    first, first_headers = ask(demo, "Hello from the embedded defaults")
    second, second_headers = ask(demo, "Hello from the embedded defaults")

    assert first_headers["x-cognitude-cache"] == "MISS"
    assert second_headers["x-cognitude-cache"] == "HIT"
    assert second_headers["x-cognitude-cache-tier"] == "memory"
    assert first.choices[0].message.content.startswith("Echo: Hello from the embedded")
    assert (second.id, second.choices[0].message.content) == (
        first.id, first.choices[0].message.content)
    assert demo.upstream.calls_with(DEMO_PROVIDER_KEY) == before + 1


def test_it_reports_cache_stats_for_the_demo_key(demo):
    def settled_stats() -> dict:
        """/cache/stats once the background writes have landed: the in-process tier
        counts at once, the cold tier (SQLite, written by an inline task) and the
        request records (the hits) within a flush. Every hit here is an in-process one."""
        deadline = time.monotonic() + 15
        while True:
            response = httpx.get(f"{demo.url}/cache/stats", headers={"X-API-Key": demo.key})
            assert response.status_code == 200
            stats = response.json()
            if (stats["total_entries"], stats["total_hits"]) == (
                    stats["redis_entries"], stats["redis_hits"]) \
                    or time.monotonic() > deadline:
                return stats
            time.sleep(0.1)

    before = settled_stats()
    for _ in range(3):
        ask(demo, "Count me")
    after = settled_stats()

    assert after["redis_available"] is True
    assert after["redis_entries"] == before["redis_entries"] + 1
    assert after["redis_hits"] == before["redis_hits"] + 2
    assert after["total_entries"] == before["total_entries"] + 1
    assert after["total_hits"] == before["total_hits"] + 2
    assert 0 < after["hit_rate"] < 1


def test_it_shows_the_demo_login_the_overview_and_the_analytics_summary(demo):
    ask(demo, "Chart me")
    ask(demo, "Chart me")
    browser = logged_in(demo)
    try:
        # Both records written first: the overview's numbers are cached for a while
        # once rendered.
        summary_when(browser, lambda s: s["hits"] >= 1 and s["misses"] >= 1)
        summary = settled_summary(browser)
        # The login lands on the demo organization's overview.
        landing = browser.get("/", follow_redirects=True)
        assert landing.url.path == "/orgs/demo/"
        overview = browser.get("/orgs/demo/", params={"period": "24h"})
        for_key = httpx.get(f"{demo.url}/api/analytics/summary", params={"period": "24h"},
                            headers={"Authorization": f"Bearer {demo.key}"}).json()
    finally:
        browser.close()

    assert summary["organization"] == "demo"
    assert summary["hits"] >= 1 and summary["hits_by_tier"]["memory"] == summary["hits"]
    assert summary["requests"] == summary["hits"] + summary["misses"] + summary["bypasses"]
    assert summary["hit_rate"] == pytest.approx(
        summary["hits"] / (summary["hits"] + summary["misses"]), abs=1e-4)
    assert for_key["requests"] == summary["requests"]
    assert overview.status_code == 200
    html = overview.text
    assert 'id="hit-rate-chart"' in html
    assert f'<h2>Requests</h2><p class="big">{summary["requests"]}</p>' in html
    assert f'<p class="big">{summary["hit_rate"] * 100:.1f}%</p>' in html
    # The hit-rate card names the tier that served them (in-process, in embedded mode).
    assert f'in-process {summary["hits_by_tier"]["memory"]}</p>' in html


def test_it_keeps_other_organizations_out_of_the_demo_login(demo):
    browser = logged_in(demo)
    try:
        assert browser.get("/orgs/some-other-org/").status_code == 404
        assert browser.get("/api/analytics/summary",
                           params={"org": "some-other-org"}).status_code == 404
    finally:
        browser.close()


def test_it_prints_the_same_key_and_a_working_login_when_run_again(tmp_path):
    first = run_demo(tmp_path)
    try:
        assert ask(first, "Before the restart")[1]["x-cognitude-cache"] == "MISS"
    finally:
        first.stop()

    again = run_demo(tmp_path)
    try:
        assert (again.key, again.password) == (first.key, first.password)
        logged_in(again).close()
        # The in-process tier went with the process; the SQLite cold tier stayed.
        _, headers = ask(again, "Before the restart")
        assert headers["x-cognitude-cache"] == "HIT"
        assert headers["x-cognitude-cache-tier"] == "postgres"
    finally:
        again.stop()

    # The password file lost: the next run sets and prints a new password, and only
    # that one logs in.
    (tmp_path / "demo_password").unlink()
    reset = run_demo(tmp_path)
    try:
        assert reset.key == first.key
        assert reset.password != first.password
        logged_in(reset).close()
        refused, browser = log_in(reset, first.password)
        browser.close()
        assert refused.status_code == 200
        assert "sessionid" not in browser.cookies
    finally:
        reset.stop()


def test_it_fires_alerts_on_its_own_without_a_beat_process(demo):
    # Every organization has "Error rate over 10%" (5 minutes); the demo runs no Celery
    # beat, so the web process evaluates the rules each minute itself. (Another model
    # than the other tests': its failures open that model's breaker, not theirs.)
    client = sdk(demo)
    for i in range(5):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": f"fail {i} [[fault:status=500]]"}])

    browser = logged_in(demo)  # the demo key is a proxy key; the owner reads the history
    deadline = time.monotonic() + 90  # the next minute's evaluation, and headroom
    while True:
        response = browser.get("/api/alerts/events", params={"transition": "firing"})
        assert response.status_code == 200, response.text
        fired = [e for e in response.json() if e["rule_name"] == "Error rate over 10%"]
        if fired or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert fired, response.json()
