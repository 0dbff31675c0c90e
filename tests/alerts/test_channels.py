"""The channels: what each kind sends (to real receivers on loopback) and refuses."""

import json
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from alerts.channels import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    DeliveryError,
    Email,
    PagerDuty,
    Slack,
    Teams,
    Webhook,
    channel_target_validate,
    post_json,
    sign,
)
from alerts.notifications import Notification, State
from tests.alerts.receivers import HttpReceiver, SmtpReceiver

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec_test_0123456789abcdef"
PD_KEY = "R0UTINGKEY0123456789ABCDEFGHIJKL"


def make_notification(state: State = State.FIRING, **changes) -> Notification:
    fields = dict(
        state=state, organization_name="Org A", organization_slug="org-a", rule_id=7,
        rule_name="Spend over $10 an hour", metric="spend_usd", metric_label="Spend",
        comparison=">", value=Decimal("12.345"), threshold=Decimal("10"), unit="USD",
        window_seconds=3600, filter="model gpt-4o", event_id=42, seq=1,
        occurred_at=datetime(2026, 12, 2, 5, 40, tzinfo=UTC),
        dashboard_url="http://127.0.0.1:8000/dashboard/orgs/org-a/alerts/",
    )
    return Notification(**{**fields, **changes})


@pytest.fixture
def receiver(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True  # the receiver is on loopback
    started = HttpReceiver().start()
    yield started
    started.stop()


def documented_verifier():
    """The verification snippet exactly as the README shows it."""
    text = README.read_text()
    section = text[text.index("### Verifying webhook signatures"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    return namespace["verify_cognitude_signature"]


# --- Slack ---------------------------------------------------------------------------

BLOCK_TYPES = {"header", "section", "actions", "context", "divider"}


def assert_block_kit(message: dict) -> None:
    """The limits Slack's Block Kit reference sets for what we use; Slack answers
    `invalid_blocks` to a message that breaks any of them."""
    assert isinstance(message["text"], str) and message["text"]
    blocks = message["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        assert block["type"] in BLOCK_TYPES
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] in ("mrkdwn", "plain_text")
                assert 0 < len(block["text"]["text"]) <= 3000
            for item in block.get("fields", []):
                assert item["type"] in ("mrkdwn", "plain_text")
                assert 0 < len(item["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "actions":
            assert 0 < len(block["elements"]) <= 25
            for element in block["elements"]:
                assert element["type"] == "button"
                assert element["text"]["type"] == "plain_text"
                assert 0 < len(element["text"]["text"]) <= 75
                assert element["url"].startswith(("http://", "https://"))
                assert len(element["url"]) <= 3000
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10


def test_it_posts_slack_block_kit_with_the_value_and_the_threshold(receiver):
    sent = Slack(target=f"{receiver.url}/services/T0/B0/x").send(make_notification())

    assert sent.response == "HTTP 200: ok"
    [got] = receiver.received
    assert got.path == "/services/T0/B0/x"
    assert got.headers["Content-Type"] == "application/json"
    message = json.loads(got.body)
    assert_block_kit(message)
    text = json.dumps(message)
    assert "$12.35" in text and "> $10.00" in text
    assert "1 hour" in text and "Org A" in text and "model gpt-4o" in text
    assert message["blocks"][0]["text"]["text"] == "Firing: Spend over $10 an hour"
    [button] = message["blocks"][3]["elements"]
    assert button["url"] == "http://127.0.0.1:8000/dashboard/orgs/org-a/alerts/"


def test_it_tells_a_resolved_slack_notice_apart():
    firing = Slack(target="x").payload(make_notification())
    resolved = Slack(target="x").payload(make_notification(State.RESOLVED,
                                                           value=Decimal("3.2")))
    assert_block_kit(resolved)
    assert resolved["blocks"][0]["text"]["text"] == "Resolved: Spend over $10 an hour"
    assert ":white_check_mark:" in resolved["blocks"][1]["text"]["text"]
    assert "is back to $3.20, no longer > $10.00" in resolved["text"]
    assert resolved["blocks"][1] != firing["blocks"][1]


def test_it_escapes_slack_markup_in_names():
    message = Slack(target="x").payload(make_notification(filter="model <!channel>&co"))
    fields = json.dumps(message["blocks"][2])
    assert "&lt;!channel&gt;&amp;co" in fields and "<!channel>" not in fields


# --- Teams and PagerDuty -------------------------------------------------------------


def test_it_posts_a_teams_adaptive_card(receiver):
    Teams(target=f"{receiver.url}/workflows/1").send(make_notification())

    body = json.loads(receiver.received[0].body)
    [attachment] = body["attachments"]
    assert body["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    facts = {fact["title"]: fact["value"] for fact in card["body"][2]["facts"]}
    assert facts["Value"] == "$12.35" and facts["Threshold"] == "> $10.00"
    assert card["actions"][0]["url"].endswith("/orgs/org-a/alerts/")


def test_it_triggers_and_resolves_one_pagerduty_incident_per_rule(receiver, settings):
    settings.COGNITUDE_PAGERDUTY_EVENTS_URL = f"{receiver.url}/v2/enqueue"
    receiver.default = (202, '{"status":"success","dedup_key":"x"}')
    channel = PagerDuty(target=PD_KEY)

    channel.send(make_notification())
    channel.send(make_notification(State.RESOLVED, seq=2))

    trigger, resolve = (json.loads(r.body) for r in receiver.received)
    assert trigger["routing_key"] == PD_KEY and trigger["event_action"] == "trigger"
    assert trigger["payload"]["severity"] == "warning"
    assert "$12.35" in trigger["payload"]["summary"]
    assert trigger["payload"]["source"] == "cognitude/org-a"
    assert resolve == {"routing_key": PD_KEY, "event_action": "resolve",
                       "dedup_key": trigger["dedup_key"]}
    assert trigger["dedup_key"] == "cognitude-org-a-rule-7"


def test_it_checks_a_pagerduty_key():
    with pytest.raises(ValidationError, match="32 letters and digits"):
        channel_target_validate(kind="pagerduty", target="https://example.com")
    assert channel_target_validate(kind="pagerduty", target=f" {PD_KEY} ") == PD_KEY


# --- Webhooks ------------------------------------------------------------------------


def test_it_signs_a_webhook_that_the_documented_snippet_verifies(receiver):
    verify = documented_verifier()
    Webhook(target=f"{receiver.url}/hooks", secret=SECRET).send(make_notification())

    [got] = receiver.received
    header = got.headers[SIGNATURE_HEADER]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert got.headers[EVENT_ID_HEADER] == "evt_42"
    assert verify(got.body, header, SECRET) is True
    body = json.loads(got.body)
    assert body["type"] == "alert.firing" and body["id"] == "evt_42"
    assert body["value"] == 12.345 and body["threshold"] == 10.0
    assert body["organization"] == {"slug": "org-a", "name": "Org A"}
    assert body["rule"]["window_seconds"] == 3600


def test_it_fails_verification_of_a_tampered_body_an_old_signature_or_another_secret(
        receiver):
    verify = documented_verifier()
    Webhook(target=receiver.url, secret=SECRET).send(make_notification())
    got = receiver.received[0]
    header = got.headers[SIGNATURE_HEADER]

    assert verify(got.body.replace(b"12.345", b"1.345"), header, SECRET) is False
    assert verify(got.body, header, "whsec_another") is False
    assert verify(got.body, "garbage", SECRET) is False
    # The same body and signature replayed after the tolerance.
    stamp = int(header.split(",")[0].removeprefix("t="))
    old = header.replace(f"t={stamp}", f"t={stamp - 301}")
    assert verify(got.body, old, SECRET) is False
    assert verify(got.body, sign(secret=SECRET, body=got.body, timestamp=stamp - 301),
                  SECRET) is False
    assert verify(got.body, sign(secret=SECRET, body=got.body, timestamp=int(time.time())),
                  SECRET) is True


def test_it_refuses_a_webhook_url_to_a_private_address_at_save(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    for kind in ("webhook", "slack", "teams"):
        with pytest.raises(ValidationError) as raised:
            channel_target_validate(kind=kind, target="http://127.0.0.1:9/hook")
        assert "private, loopback or link-local" in raised.value.messages[0]
    with pytest.raises(ValidationError, match="cloud metadata"):
        channel_target_validate(kind="webhook", target="http://metadata.google.internal/x")
    with pytest.raises(ValidationError, match="must start with http"):
        channel_target_validate(kind="webhook", target="file:///etc/passwd")
    with pytest.raises(ValidationError, match="user name or password"):
        channel_target_validate(kind="webhook", target="https://u:p@example.com/x")


def test_it_refuses_a_private_address_at_send(receiver, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    with pytest.raises(DeliveryError) as raised:
        Webhook(target=receiver.url, secret=SECRET).send(make_notification())
    assert raised.value.retryable is False
    assert "private" in raised.value.response
    assert receiver.received == []


def test_it_refuses_a_private_address_found_only_when_connecting(receiver, settings):
    # What a name re-pointed at loopback after it was saved (DNS rebinding) meets: the
    # check every connection makes, past the URL's own.
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    with pytest.raises(DeliveryError) as raised:
        post_json(f"http://localhost:{receiver.port}/", b"{}", {})
    assert raised.value.retryable is False and "private" in raised.value.response
    assert receiver.received == []


def test_it_does_not_follow_a_redirect(receiver):
    receiver.answers = [(302, "")]
    with pytest.raises(DeliveryError) as raised:
        Webhook(target=receiver.url, secret=SECRET).send(make_notification())
    assert raised.value.retryable is False and "redirect" in raised.value.response
    assert len(receiver.received) == 1


@pytest.mark.parametrize(("status", "retryable"),
                         [(500, True), (503, True), (429, True), (404, False), (403, False),
                          (400, False)])
def test_it_tells_which_answers_are_worth_retrying(receiver, status, retryable):
    receiver.answers = [(status, "no_service")]
    with pytest.raises(DeliveryError) as raised:
        Slack(target=receiver.url).send(make_notification())
    assert raised.value.retryable is retryable
    assert raised.value.response == f"HTTP {status}: no_service"


def test_it_calls_a_closed_port_retryable(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    closed = HttpReceiver()  # never started
    with pytest.raises(DeliveryError) as raised:
        Webhook(target=closed.url, secret=SECRET).send(make_notification())
    assert raised.value.retryable is True and "Cannot connect" in raised.value.response


def test_it_gives_up_on_a_silent_receiver_after_the_timeout_retryable(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    settings.COGNITUDE_ALERT_DELIVERY_TIMEOUT = 0.3
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(DeliveryError) as raised:
            Slack(target=f"http://127.0.0.1:{silent.getsockname()[1]}/").send(
                make_notification())
    assert time.monotonic() - started < 2
    assert raised.value.retryable is True and raised.value.response == "No answer in time"


# --- E-mail --------------------------------------------------------------------------


@pytest.fixture
def smtp(settings):
    server = SmtpReceiver().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "Cognitude <alerts@cognitude.test>"
    yield server
    server.stop()


def test_it_emails_plain_text_and_html(smtp):
    name = "Spend <b>over</b> $10"
    Email(target="ops@example.com, Ann <ann@example.com>").send(
        make_notification(rule_name=name))

    [message] = smtp.messages
    assert smtp.inbox.recipients == [["ops@example.com", "ann@example.com"]]
    assert message["From"] == "Cognitude <alerts@cognitude.test>"
    assert message["Subject"] == f"[Cognitude] Firing: {name} (Org A)"
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for part in (plain, html):
        assert "$12.35" in part
        assert "http://127.0.0.1:8000/dashboard/orgs/org-a/alerts/" in part
    assert "Threshold:    > $10.00" in plain and name in plain
    assert "&gt; $10.00" in html
    assert "Spend &lt;b&gt;over&lt;/b&gt; $10" in html and "<b>over</b>" not in html


def test_it_emails_a_resolved_notice(smtp):
    Email(target="ops@example.com").send(make_notification(State.RESOLVED))
    [message] = smtp.messages
    assert message["Subject"].startswith("[Cognitude] Resolved: ")
    assert "no longer > $10.00" in message.get_body(("plain",)).get_content()


def test_it_calls_a_refused_mailbox_permanent(smtp):
    with pytest.raises(DeliveryError) as raised:
        Email(target="nobody@example.com").send(make_notification())
    assert raised.value.retryable is False and "No such mailbox" in raised.value.response
    assert smtp.messages == []


def test_it_calls_an_unreachable_smtp_server_retryable(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", HttpReceiver().port  # closed
    with pytest.raises(DeliveryError) as raised:
        Email(target="ops@example.com").send(make_notification())
    assert raised.value.retryable is True and "SMTP failed" in raised.value.response


# Loads the settings once per environment in one fresh process (a process each costs
# a second on a loaded machine): the e-mail settings read, or the error.
_READ_EMAIL_SETTINGS = """
import importlib, json, os, sys
names = ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER",
         "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS", "EMAIL_USE_SSL", "DEFAULT_FROM_EMAIL")
results, module = [], None
for env in json.loads(sys.argv[1]):
    for name in [n for n in os.environ if n.startswith("EMAIL_") or n == "DEFAULT_FROM_EMAIL"]:
        del os.environ[name]
    os.environ.update(env)
    try:
        if module is None:
            import cognitude.settings as module
        else:
            module = importlib.reload(module)
        results.append({name: getattr(module, name) for name in names})
    except Exception as exc:
        results.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(results))
"""


def email_settings(*envs: dict[str, str]) -> list:
    done = subprocess.run([sys.executable, "-c", _READ_EMAIL_SETTINGS, json.dumps(envs)],
                          cwd=README.parent, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_it_reads_the_smtp_server_from_the_environment():
    default, tls, parts, bad_port, bad_url = email_settings(
        {},
        {"EMAIL_URL": "smtp+tls://ann:pw%40x@mail.example.com:587",
         "DEFAULT_FROM_EMAIL": "Alerts <alerts@example.com>"},
        {"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "2525", "EMAIL_USE_SSL": "true"},
        {"EMAIL_PORT": "twenty-five"},
        {"EMAIL_URL": "carrier-pigeon://coop"},
    )
    assert default["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert tls == {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                   "EMAIL_HOST": "mail.example.com", "EMAIL_PORT": 587,
                   "EMAIL_HOST_USER": "ann", "EMAIL_HOST_PASSWORD": "pw@x",
                   "EMAIL_USE_TLS": True, "EMAIL_USE_SSL": False,
                   "DEFAULT_FROM_EMAIL": "Alerts <alerts@example.com>"}
    assert parts["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (parts["EMAIL_HOST"], parts["EMAIL_PORT"], parts["EMAIL_USE_SSL"]) == (
        "smtp.example.com", 2525, True)
    assert bad_port.startswith("ImproperlyConfigured: EMAIL_PORT")
    assert bad_url.startswith("ImproperlyConfigured")


def test_it_checks_email_addresses():
    with pytest.raises(ValidationError):
        channel_target_validate(kind="email", target="ops@example.com, not-an-address")
    with pytest.raises(ValidationError, match="at least one"):
        channel_target_validate(kind="email", target=" , ")
    assert channel_target_validate(kind="email", target="a@example.com,b@example.com ") == (
        "a@example.com, b@example.com")
    with pytest.raises(ValidationError, match="Unknown channel kind"):
        channel_target_validate(kind="carrier-pigeon", target="x")
