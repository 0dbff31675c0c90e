"""Upstream base URLs must not point into the operator's own network (SSRF).

Only literal public IPs are used as "accepted" examples: this machine has no
internet DNS, and a literal IP needs none.
"""

import asyncio

import pytest
from django.core.exceptions import ValidationError

from organizations.models import Provider
from organizations.services import organization_create, provider_credential_set
from organizations.urlcheck import validate_upstream_base_url
from proxy.providers.base import UpstreamError, close_sessions
from proxy.providers.openai import OpenAIProvider
from routing.table import ProviderConfig

REFUSED_AS_PRIVATE = [
    ("http://169.254.169.254/", "169.254.169.254"),            # cloud metadata, link-local
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://127.0.0.1/", "127.0.0.1"),
    ("http://127.0.0.1:8000/v1", "127.0.0.1"),
    ("http://localhost:8080/v1", "127.0.0.1"),                 # a name resolving to loopback
    ("http://10.1.2.3/", "10.1.2.3"),
    ("http://192.168.0.10/v1", "192.168.0.10"),
    ("http://172.16.5.4/", "172.16.5.4"),
    ("http://100.64.0.1/", "100.64.0.1"),                      # carrier-grade NAT
    ("http://0.0.0.0/", "0.0.0.0"),
    ("http://[::1]/", "::1"),
    ("http://[fe80::1]/", "fe80::1"),
    ("http://[fd00::1]/", "fd00::1"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),               # IPv4-mapped loopback
    ("http://2130706433/", "127.0.0.1"),                       # 127.0.0.1 as one number
]

# IPv6 addresses that carry an IPv4 address reach that IPv4 address (through a NAT64
# or 6to4 gateway, a Teredo relay, the kernel): they are judged by what they carry.
REFUSED_AS_CARRYING_A_PRIVATE_IPV4 = [
    ("http://[64:ff9b::7f00:1]/", "127.0.0.1"),                # NAT64 well-known prefix
    ("http://[64:ff9b::a9fe:a9fe]/", "169.254.169.254"),
    ("http://[64:ff9b::10.1.2.3]/v1", "10.1.2.3"),
    ("http://[::ffff:0:127.0.0.1]/", "127.0.0.1"),             # IPv4-translated (SIIT)
    ("http://[::ffff:0:a9fe:a9fe]/", "169.254.169.254"),
    ("http://[::127.0.0.1]/", "127.0.0.1"),                    # IPv4-compatible
    ("http://[::a9fe:a9fe]/", "169.254.169.254"),
    ("http://[2002:7f00:1::1]/", "127.0.0.1"),                 # 6to4
    ("http://[2002:a9fe:a9fe::]/", "169.254.169.254"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "127.0.0.1"),  # Teredo client
    ("http://[2001:0:4136:e378:8000:63bf:5601:5601]/", "169.254.169.254"),
    # NAT64 local-use (RFC 8215): the operator's own translator, whatever it carries.
    ("http://[64:ff9b:1::7f00:1]/", "64:ff9b:1::7f00:1"),
    ("http://[64:ff9b:1::808:808]/", "64:ff9b:1::808:808"),
]

REFUSED_SCHEMES = [
    "file:///etc/passwd",
    "ftp://files.example.com/v1",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "javascript:alert(1)",
    "//8.8.8.8/v1",
]


def refusal(url: str, *, allow_private: bool) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_upstream_base_url(url, allow_private=allow_private)
    return " ".join(caught.value.messages)


@pytest.mark.parametrize(("url", "address"),
                         REFUSED_AS_PRIVATE + REFUSED_AS_CARRYING_A_PRIVATE_IPV4)
def test_it_refuses_private_loopback_and_link_local_hosts(url, address):
    message = refusal(url, allow_private=False)

    assert address in message
    assert "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS" in message


@pytest.mark.parametrize("url", REFUSED_SCHEMES)
def test_it_refuses_anything_but_http_and_https(url):
    assert "http:// or https://" in refusal(url, allow_private=False)


@pytest.mark.parametrize("url", [
    "http://metadata.google.internal/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL/",
    "http://metadata/",
])
def test_it_refuses_metadata_names_without_resolving_them(url):
    assert "cloud metadata address" in refusal(url, allow_private=False)


@pytest.mark.parametrize("url", [
    "https://user:sk-secret@8.8.8.8/v1",
    "https://sk-secret@8.8.8.8/v1",
    "https://user:sk-secret@127.0.0.1/v1",
])
def test_it_refuses_credentials_in_the_url(url):
    assert "not in the URL" in refusal(url, allow_private=False)
    assert "not in the URL" in refusal(url, allow_private=True)


def test_it_refuses_a_url_without_a_host():
    assert "no host" in refusal("http:///v1", allow_private=False)


def test_it_refuses_a_name_that_does_not_resolve():
    assert "Cannot resolve" in refusal("https://no-such-host.invalid/v1", allow_private=False)


@pytest.mark.parametrize("url", [
    "http://[::1",            # unbalanced IPv6 bracket
    "http://8.8.8.8:99999/",  # port out of range
    "http://8.8.8.8:port/",
])
def test_it_refuses_an_unparsable_url_with_a_validation_error(url):
    # A ValueError here would be a 500 in the admin instead of a form error.
    assert "not a valid URL" in refusal(url, allow_private=False)
    assert "not a valid URL" in refusal(url, allow_private=True)


@pytest.mark.parametrize("url", [
    "https://8.8.8.8/v1",
    "http://1.1.1.1:8080/v1",
    "https://[2001:4860:4860::8888]/v1",
    "https://[::ffff:8.8.8.8]/v1",              # the embedding forms, carrying 8.8.8.8
    "https://[64:ff9b::808:808]/v1",
    "https://[2002:808:808::1]/v1",
    "https://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/v1",
])
def test_it_accepts_a_public_address(url):
    validate_upstream_base_url(url, allow_private=False)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/v1",
    "http://localhost:11434/v1",
    "http://10.1.2.3/",
    "http://[::1]:8080/v1",
])
def test_it_accepts_private_hosts_when_allowed(url):
    validate_upstream_base_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/"])
def test_it_still_refuses_other_schemes_when_private_hosts_are_allowed(url):
    assert "http:// or https://" in refusal(url, allow_private=True)


# --- through provider_credential_set, as the admin and the commands use it ---------------

@pytest.mark.parametrize("url", [
    "http://169.254.169.254/",
    "http://localhost:8080/v1",
    "http://[::1]/",
    "file:///etc/passwd",
    "http://metadata.google.internal/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[::ffff:0:127.0.0.1]/",
])
def test_it_stores_no_credential_for_a_refused_url(db, settings, url):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    org = organization_create(name="Org A")

    with pytest.raises(ValidationError):
        provider_credential_set(organization=org, kind="openai", base_url=url,
                                api_key="sk-org-a-1234")

    assert not Provider.objects.filter(organization=org).exists()


def test_it_keeps_the_old_credential_when_the_new_url_is_refused(db, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    org = organization_create(name="Org A")
    provider_credential_set(organization=org, kind="openai", base_url="https://8.8.8.8/v1",
                            api_key="sk-org-a-1234")

    with pytest.raises(ValidationError, match="127.0.0.1"):
        provider_credential_set(organization=org, kind="openai",
                                base_url="http://127.0.0.1:6379/", api_key=None)

    assert Provider.objects.get(organization=org).base_url == "https://8.8.8.8/v1"


def test_it_stores_a_private_url_when_the_operator_allows_it(db, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    org = organization_create(name="Org A")

    provider_credential_set(organization=org, kind="openai",
                            base_url="http://localhost:11434/v1", api_key="sk-local")

    assert Provider.objects.get(organization=org).base_url == "http://localhost:11434/v1"


# --- at request time, for a URL stored while private upstreams were allowed -------------

@pytest.mark.parametrize(("url", "address"), REFUSED_AS_CARRYING_A_PRIVATE_IPV4)
def test_it_refuses_an_address_carrying_a_private_ipv4_when_the_request_is_made(
        settings, url, address):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    provider = OpenAIProvider(ProviderConfig(id=1, name="stored", kind="openai",
                                             base_url=url.rstrip("/"), api_key="sk-test"))

    async def run():
        try:
            return await provider.send("models", {})
        finally:
            await close_sessions()

    with pytest.raises(UpstreamError) as raised:
        asyncio.run(run())

    assert (raised.value.status, raised.value.code) == (502, "upstream_unavailable")
    assert "private address" in raised.value.message
