"""The ASGI entry point: /v1/ goes to the lean gateway app, everything else to Django.

`uvicorn cognitude.asgi:application` with the environment variables alone starts the
whole gateway. COGNITUDE_SERVE splits it into two kinds of process, so that the Django
side's password hashing (sign-ins) never shares the gateway's event loop: `gateway`
serves /v1/ (and /health, /metrics) only, `django` everything but /v1/.
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.signals import request_finished
from django.db import connections

from cognitude.errors import error_body

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")

django_application = get_asgi_application()


def _close_request_connections(**kwargs) -> None:
    # Django runs each request's synchronous part in a thread of its own (asgiref's
    # ThreadSensitiveContext), so a database connection kept for CONN_MAX_AGE is never
    # used again: it lingers until garbage collection, and a few concurrent clients of
    # /api exhausted PostgreSQL's max_connections (84 connections from 8 clients,
    # tests/badinput). Closed with the request instead, in the request's own thread.
    connections.close_all()


request_finished.connect(_close_request_connections)

from proxy.app import application as gateway_application  # noqa: E402  (needs Django set up)

# What a gateway-only process still answers from Django: probes, no sign-ins.
GATEWAY_PROCESS_DJANGO_PATHS = ("/health", "/metrics")


async def _not_served(send, message: str) -> None:
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": error_body(404, message,
                                                                  code="not_served_here")})


async def _lifespan_without_gateway(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send):
    serve = settings.COGNITUDE_SERVE
    if scope["type"] == "lifespan":
        if serve == "django":
            await _lifespan_without_gateway(receive, send)
        else:
            await gateway_application(scope, receive, send)
    elif scope["type"] == "http" and scope["path"].startswith("/v1/"):
        if serve == "django":
            await _not_served(send, "This process serves the dashboard and admin; the "
                                    "gateway (/v1/) is served by another")
        else:
            await gateway_application(scope, receive, send)
    elif serve == "gateway" and scope["path"] not in GATEWAY_PROCESS_DJANGO_PATHS:
        await _not_served(send, "This process serves the gateway (/v1/) only; the "
                                "dashboard and admin are served by another")
    else:
        await django_application(scope, receive, send)
