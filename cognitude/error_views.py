"""Django's own error answers (no such URL, a request it will not read, a crash, a
method a view does not take) in the gateway's error shape on the JSON endpoints: the
management API, /cache, /health and /metrics. The dashboard and the admin keep Django's
HTML pages."""

import math
from collections.abc import Callable
from functools import wraps

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from cognitude.db import database_unreachable
from cognitude.errors import error_body

_JSON_PREFIXES = ("/api/", "/cache", "/health", "/metrics")


def _is_json_path(request: HttpRequest) -> bool:
    return request.path.startswith(_JSON_PREFIXES)


def json_error(status: int, message: str, *, code: str | None = None,
               param: str | None = None) -> HttpResponse:
    return HttpResponse(error_body(status, message, code=code, param=param), status=status,
                        content_type="application/json")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    # Django's own refusals: too many query parameters or form fields, a body over
    # DATA_UPLOAD_MAX_MEMORY_SIZE, a Host header it does not serve.
    if _is_json_path(request):
        return json_error(400, "Bad request: the server will not read it",
                          code="bad_request")
    return defaults.bad_request(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_json_path(request):
        return json_error(404, f"Unknown endpoint {request.method} {request.path}",
                          code="unknown_url")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_json_path(request):
        return json_error(500, "The server failed to answer this request",
                          code="server_error")
    return defaults.server_error(request)


def database_unavailable() -> HttpResponse:
    """PostgreSQL is not there (cognitude.db): a 503, as /v1 answers then (the request
    may be fine), not a 500."""
    response = json_error(503, "The database is unavailable: try again shortly",
                          code="database_unavailable")
    response["Retry-After"] = str(max(1, math.ceil(settings.COGNITUDE_DATABASE_BREAKER_SECONDS)))
    return response


def _wrong_method(request: HttpRequest, methods: tuple[str, ...]) -> HttpResponse:
    response = json_error(405, f"Use {' or '.join(methods)} for {request.path}",
                          code="method_not_allowed")
    response["Allow"] = ", ".join(methods)
    return response


def json_methods(*methods: str) -> Callable:
    """Like `require_http_methods`, with the 405 in the error shape; also CSRF-exempt,
    since these views take no session (CSRF would answer any POST 403 first); and
    PostgreSQL down is a 503 (`database_unavailable`), not a 500."""

    def decorator(view: Callable) -> Callable:
        if iscoroutinefunction(view):
            @wraps(view)
            async def inner(request: HttpRequest, *args, **kwargs) -> HttpResponse:
                if request.method not in methods:
                    return _wrong_method(request, methods)
                try:
                    return await view(request, *args, **kwargs)
                except Exception as exc:
                    if database_unreachable(exc):
                        return database_unavailable()
                    raise
        else:
            @wraps(view)
            def inner(request: HttpRequest, *args, **kwargs) -> HttpResponse:
                if request.method not in methods:
                    return _wrong_method(request, methods)
                try:
                    return view(request, *args, **kwargs)
                except Exception as exc:
                    if database_unreachable(exc):
                        return database_unavailable()
                    raise
        return csrf_exempt(inner)

    return decorator
