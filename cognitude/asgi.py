"""The ASGI entry point: /v1/ goes to the lean gateway app, everything else to Django.

`uvicorn cognitude.asgi:application` with the environment variables alone starts the
whole gateway.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")

django_application = get_asgi_application()

from proxy.app import application as gateway_application  # noqa: E402  (needs Django set up)


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith("/v1/"):
        await gateway_application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await gateway_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
