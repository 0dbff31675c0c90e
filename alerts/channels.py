"""Where alerts go: one small sender per kind of channel, in the manner of healthchecks'
transports. Each formats a Notification (pure, testable without a network) and sends it.

The HTTP channels connect only through organizations.urlcheck.public_socket, follow no
redirect and wait a short time (COGNITUDE_ALERT_DELIVERY_TIMEOUT): a receiver is a URL
a tenant typed, so it is treated like a provider URL (never the operator's network).
"""

import asyncio
import hashlib
import hmac
import json
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parseaddr
from typing import ClassVar

import aiohttp
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.template.loader import render_to_string

from alerts.notifications import Notification, State
from organizations.urlcheck import PrivateAddressRefused, public_socket, validate_upstream_base_url

SIGNATURE_HEADER = "Cognitude-Signature"
EVENT_ID_HEADER = "Cognitude-Event-Id"
USER_AGENT = "Cognitude-Alerts/1.0"
# What is kept of a receiver's answer on the AlertEvent (enough to see why it failed).
RESPONSE_KEEP = 500


@dataclass(frozen=True, slots=True)
class Sent:
    """A receiver accepted the notification; `response` is what it said (truncated)."""

    response: str


class DeliveryError(Exception):
    """A receiver did not accept the notification. `retryable`: trying again later may
    succeed (the receiver is down, slow, or asked to slow down); otherwise it will not
    (a revoked webhook, a refused address, a redirect)."""

    def __init__(self, response: str, *, retryable: bool,
                 retry_after: float | None = None) -> None:
        super().__init__(response)
        self.response = response[:RESPONSE_KEEP]
        self.retryable = retryable
        self.retry_after = retry_after


class Channel:
    """One kind of channel. `target` is the decrypted destination (a URL, addresses, a
    PagerDuty routing key), `secret` the decrypted signing secret (webhooks only)."""

    kind: ClassVar[str]
    label: ClassVar[str]

    def __init__(self, *, target: str, secret: str = "") -> None:
        self.target = target
        self.secret = secret

    @classmethod
    def target_validate(cls, target: str) -> str:
        """The target as stored, or ValidationError saying what is wrong with it."""
        raise NotImplementedError

    def send(self, notification: Notification) -> Sent:
        """Deliver once; raises DeliveryError."""
        raise NotImplementedError


# --- HTTP ----------------------------------------------------------------------------


def _validate_url(url: str, what: str) -> str:
    url = url.strip()
    validate_upstream_base_url(
        url, allow_private=settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS, what=what)
    return url


async def _post(url: str, body: bytes, headers: dict[str, str]) -> Sent:
    timeout = aiohttp.ClientTimeout(total=settings.COGNITUDE_ALERT_DELIVERY_TIMEOUT)
    connector = aiohttp.TCPConnector(socket_factory=public_socket, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        try:
            async with session.post(url, data=body, headers=headers,
                                    allow_redirects=False) as response:
                text = (await response.content.read(RESPONSE_KEEP)).decode(errors="replace")
                status, retry_after = response.status, response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PrivateAddressRefused):
                raise DeliveryError(
                    "Refused: the URL points to a private, loopback or link-local address",
                    retryable=False) from exc
            raise DeliveryError(f"Cannot connect: {exc.os_error}", retryable=True) from exc
        except TimeoutError as exc:
            raise DeliveryError("No answer in time", retryable=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"Connection failed: {type(exc).__name__}: {exc}",
                                retryable=True) from exc
    answer = f"HTTP {status}: {text}".strip()
    if 200 <= status < 300:
        return Sent(answer[:RESPONSE_KEEP])
    if 300 <= status < 400:
        # Never followed: a Location may point into the operator's network.
        raise DeliveryError(f"{answer} (a redirect; redirects are not followed)",
                            retryable=False)
    # A receiver that is down, overloaded or rate-limiting comes back; a 404 or 403 (a
    # deleted Slack webhook, a revoked token) does not.
    retryable = status >= 500 or status in (408, 425, 429)
    raise DeliveryError(answer, retryable=retryable, retry_after=_seconds(retry_after))


def _seconds(retry_after: str | None) -> float | None:
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None  # an HTTP date: the backoff decides instead


def post_json(url: str, body: bytes, headers: dict[str, str]) -> Sent:
    """POST from synchronous code (tasks, views). A thread of its own when this thread
    already runs an event loop (an async caller), where asyncio.run cannot."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_post(url, body, headers))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _post(url, body, headers)).result()


def _json(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class HttpChannel(Channel):
    def url(self) -> str:
        return self.target

    def payload(self, notification: Notification) -> dict:
        raise NotImplementedError

    def headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        return {}

    def send(self, notification: Notification) -> Sent:
        body = _json(self.payload(notification))
        # Checked again at send: the URL may have been stored while private hosts were
        # allowed, or be malformed in an old row. The socket factory catches rebinding.
        try:
            _validate_url(self.url(), f"The {self.label} URL")
        except ValidationError as exc:
            raise DeliveryError(" ".join(exc.messages), retryable=False) from exc
        return post_json(self.url(), body, self.headers(notification, body))


def _slack_escape(text: str) -> str:
    # The three characters Slack's mrkdwn wants escaped; the rest is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Slack(HttpChannel):
    """A Slack incoming webhook (https://hooks.slack.com/services/...): Block Kit."""

    kind = "slack"
    label = "Slack webhook"

    @classmethod
    def target_validate(cls, target: str) -> str:
        return _validate_url(target, f"The {cls.label} URL")

    def payload(self, notification: Notification) -> dict:
        n = notification
        icon = {State.FIRING: ":rotating_light:", State.RENOTIFY: ":rotating_light:",
                State.RESOLVED: ":white_check_mark:", State.TEST: ":wave:"}[n.state]
        fields = [
            ("Value", n.value_text), ("Threshold", n.threshold_text),
            ("Window", n.window_text), ("Organization", n.organization_name),
            ("Metric", n.metric_label), ("Scope", n.scope_text),
        ]
        return {
            # Shown in notifications and by clients without Block Kit.
            "text": f"{n.title} ({n.organization_name}): {n.summary}",
            "blocks": [
                {"type": "header",
                 "text": {"type": "plain_text", "text": n.title[:150], "emoji": True}},
                {"type": "section",
                 "text": {"type": "mrkdwn", "text": f"{icon} {_slack_escape(n.summary)}"}},
                {"type": "section",
                 "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"}
                            for name, value in fields]},
                {"type": "actions",
                 "elements": [{"type": "button",
                               "text": {"type": "plain_text", "text": "Open in Cognitude"},
                               "url": n.dashboard_url}]},
                {"type": "context",
                 "elements": [{"type": "mrkdwn", "text": _slack_escape(
                     f"Cognitude · {n.organization_slug} · "
                     f"{n.occurred_at:%Y-%m-%d %H:%M UTC}")}]},
            ],
        }


class Teams(HttpChannel):
    """A Microsoft Teams incoming webhook (a Workflows "post to a channel when a webhook
    request is received" URL): an Adaptive Card."""

    kind = "teams"
    label = "Teams webhook"

    @classmethod
    def target_validate(cls, target: str) -> str:
        return _validate_url(target, f"The {cls.label} URL")

    def payload(self, notification: Notification) -> dict:
        n = notification
        color = {State.FIRING: "attention", State.RENOTIFY: "attention",
                 State.RESOLVED: "good", State.TEST: "accent"}
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": n.title, "weight": "bolder", "size": "medium",
                 "color": color[n.state], "wrap": True},
                {"type": "TextBlock", "text": n.summary, "wrap": True},
                {"type": "FactSet", "facts": [
                    {"title": "Value", "value": n.value_text},
                    {"title": "Threshold", "value": n.threshold_text},
                    {"title": "Window", "value": n.window_text},
                    {"title": "Organization", "value": n.organization_name},
                    {"title": "Scope", "value": n.scope_text},
                ]},
            ],
            "actions": [{"type": "Action.OpenUrl", "title": "Open in Cognitude",
                         "url": n.dashboard_url}],
        }
        return {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}


class PagerDuty(HttpChannel):
    """PagerDuty Events API v2. The target is the service's integration (routing) key;
    one dedup_key per rule, so a resolve closes the incident its firing opened."""

    kind = "pagerduty"
    label = "PagerDuty"

    @classmethod
    def target_validate(cls, target: str) -> str:
        target = target.strip()
        if len(target) != 32 or not target.isalnum():
            raise ValidationError("A PagerDuty integration key is 32 letters and digits")
        return target

    def url(self) -> str:
        return settings.COGNITUDE_PAGERDUTY_EVENTS_URL

    def payload(self, notification: Notification) -> dict:
        n = notification
        rule = "test" if n.state is State.TEST else f"rule-{n.rule_id}"
        event = {
            "routing_key": self.target,
            "event_action": "resolve" if n.is_resolved else "trigger",
            "dedup_key": f"cognitude-{n.organization_slug}-{rule}",
        }
        if n.is_resolved:
            return event
        return {
            **event,
            "payload": {
                "summary": f"{n.title} ({n.organization_name}): {n.summary}"[:1024],
                "source": f"cognitude/{n.organization_slug}",
                "severity": "info" if n.state is State.TEST else "warning",
                "timestamp": n.occurred_at.isoformat(),
                "component": n.metric,
                "group": n.organization_slug,
                "class": n.metric,
                "custom_details": {"value": n.value_text, "threshold": n.threshold_text,
                                   "window": n.window_text, "scope": n.scope_text},
            },
            "links": [{"href": n.dashboard_url, "text": "Open in Cognitude"}],
        }


def sign(*, secret: str, body: bytes, timestamp: int) -> str:
    """The Cognitude-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>" under the channel's signing secret> (Stripe's scheme, README)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class Webhook(HttpChannel):
    """Any HTTPS endpoint: the notification as JSON, signed, with the event's id so that
    a receiver can drop a repeat (delivery is at least once from its side: an answer
    lost on the way back is sent again)."""

    kind = "webhook"
    label = "webhook"

    @classmethod
    def target_validate(cls, target: str) -> str:
        return _validate_url(target, "The webhook URL")

    def payload(self, notification: Notification) -> dict:
        return notification.as_json()

    def headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        # Signed at each attempt, so a retry carries a fresh timestamp within the
        # receiver's tolerance.
        headers = {SIGNATURE_HEADER: sign(secret=self.secret, body=body,
                                          timestamp=int(time.time()))}
        if notification.event_id is not None:
            headers[EVENT_ID_HEADER] = f"evt_{notification.event_id}"
        return headers


# --- E-mail --------------------------------------------------------------------------


class Email(Channel):
    """Through Django's e-mail backend (EMAIL_URL or EMAIL_HOST...): plain text and HTML.
    The target is one or more addresses, comma-separated."""

    kind = "email"
    label = "e-mail"

    @classmethod
    def target_validate(cls, target: str) -> str:
        addresses = [part.strip() for part in target.split(",") if part.strip()]
        if not addresses:
            raise ValidationError("Give at least one e-mail address")
        for address in addresses:
            validate_email(parseaddr(address)[1] or address)
        return ", ".join(addresses)

    def message(self, notification: Notification) -> EmailMultiAlternatives:
        context = {"n": notification}
        subject = f"[Cognitude] {notification.title} ({notification.organization_name})"
        message = EmailMultiAlternatives(
            subject=subject.replace("\n", " ")[:200],
            body=render_to_string("alerts/email/notification.txt", context),
            to=[part.strip() for part in self.target.split(",") if part.strip()],
        )
        message.attach_alternative(
            render_to_string("alerts/email/notification.html", context), "text/html")
        return message

    def send(self, notification: Notification) -> Sent:
        message = self.message(notification)
        try:
            with get_connection(timeout=settings.COGNITUDE_ALERT_DELIVERY_TIMEOUT) as conn:
                conn.send_messages([message])
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
            # 5xx: the server will refuse it again (no such mailbox, relaying denied).
            codes = [code for code, _ in getattr(exc, "recipients", {}).values()] or [
                getattr(exc, "smtp_code", 0)]
            raise DeliveryError(f"SMTP refused: {exc}",
                                retryable=any(code < 500 for code in codes)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP failed: {type(exc).__name__}: {exc}",
                                retryable=True) from exc
        return Sent(f"Sent to {', '.join(message.to)}")


CHANNELS: dict[str, type[Channel]] = {
    channel.kind: channel for channel in (Slack, Email, Webhook, Teams, PagerDuty)
}
CHANNEL_KINDS = tuple(CHANNELS)


def channel_for(*, kind: str, target: str, secret: str = "") -> Channel:
    return CHANNELS[kind](target=target, secret=secret)


def channel_target_validate(*, kind: str, target: str) -> str:
    """The target of a new or changed channel, normalised for storage; ValidationError
    (a clear message) if it is not usable, e.g. a webhook URL to a private address."""
    if kind not in CHANNELS:
        raise ValidationError(f"Unknown channel kind {kind!r}; one of {', '.join(CHANNELS)}")
    return CHANNELS[kind].target_validate(target)
