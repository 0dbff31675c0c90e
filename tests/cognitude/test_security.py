"""Security headers on the Django side's pages, always; secure cookies and HSTS when
served over TLS (COGNITUDE_TLS), with X-Forwarded-Proto trusted only when told."""

import json
import os
import subprocess
import sys

import pytest

from tests.live import PROJECT_DIR

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/accounts/login/", "/", "/admin/login/"])
def test_it_sends_the_security_headers_on_every_page(world, client, path):
    client.force_login(world.alice)

    response = client.get(path, follow=True)

    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


def test_it_allows_no_inline_style_on_the_dashboard(world, client):
    client.force_login(world.alice)

    page = client.get(f"/orgs/{world.a.org.slug}/")

    assert "style-src 'self';" in page["Content-Security-Policy"]
    # What the policy would block, were it there.
    assert "<script>" not in page.content.decode() and " style=" not in page.content.decode()


def over_tls(**env: str) -> dict:
    """The login page's headers and cookies from a process with these settings, asked
    as a TLS-terminating proxy would forward it."""
    script = """
import json, django
django.setup()
from django.test import Client
r = Client(SERVER_NAME="localhost").get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({"hsts": r.get("Strict-Transport-Security"),
                  "csrf_secure": bool(r.cookies["csrftoken"]["secure"])}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, timeout=60,
                          capture_output=True, text=True,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "cognitude.settings",
                               **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_it_sends_hsts_and_secure_cookies_behind_a_trusted_tls_proxy():
    seen = over_tls(COGNITUDE_TLS="1", COGNITUDE_TRUST_X_FORWARDED_PROTO="1")

    assert seen == {"hsts": "max-age=31536000", "csrf_secure": True}


def test_it_does_not_believe_x_forwarded_proto_unless_told():
    # A client's own X-Forwarded-Proto must not make a plain-HTTP request "secure".
    seen = over_tls(COGNITUDE_TLS="1")

    assert seen == {"hsts": None, "csrf_secure": True}
    assert over_tls() == {"hsts": None, "csrf_secure": False}
