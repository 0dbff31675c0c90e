"""The Content-Security-Policy of the Django side's pages (Django 5.2 has none built in).

The dashboard's pages load only their own static files: no inline script or style, no
third-party origin, so its policy allows nothing else. Django admin's templates carry
inline style attributes, so admin pages also allow inline styles (never inline
scripts). The other security headers come from Django's own middleware (settings.py:
nosniff, Referrer-Policy, X-Frame-Options DENY, and HSTS behind TLS).
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

DASHBOARD_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
ADMIN_POLICY = DASHBOARD_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = ADMIN_POLICY if request.path.startswith("/admin/") else DASHBOARD_POLICY
        response.headers.setdefault("Content-Security-Policy", policy)
        return response
