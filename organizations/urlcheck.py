"""Upstream base URLs must not point into the operator's own network (SSRF)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

# Names that mean "the cloud metadata service" whatever they resolve to.
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def validate_upstream_base_url(url: str, *, allow_private: bool) -> None:
    """Raise ValidationError unless `url` is an http(s) URL to a public host.

    With `allow_private` (COGNITUDE_ALLOW_PRIVATE_UPSTREAMS) private, loopback and
    link-local hosts are accepted: local models and the fake upstream live there.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValidationError(f"The provider base URL is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationError("The provider base URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise ValidationError("The provider base URL has no host")
    if parts.username or parts.password:
        raise ValidationError("Put the provider key in the key field, not in the URL")
    if allow_private:
        return
    if host.lower().rstrip(".") in _METADATA_HOSTS:
        raise ValidationError(f"{host} is a cloud metadata address")
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationError(f"Cannot resolve {host}") from exc
    for info in infos:
        address = info[4][0]
        if not is_public_address(address):
            raise ValidationError(
                f"{host} resolves to {address}, a private, loopback or link-local address; "
                "set COGNITUDE_ALLOW_PRIVATE_UPSTREAMS=true to allow it"
            )
