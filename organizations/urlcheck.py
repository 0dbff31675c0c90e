"""Upstream base URLs must not point into the operator's own network (SSRF)."""

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

# Names that mean "the cloud metadata service" whatever they resolve to.
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}

# IPv6 ranges whose last 32 bits are the IPv4 address a packet to them ends up at.
_IPV4_IN_LOW_BITS = (
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT, RFC 7915)
    ipaddress.IPv6Network("64:ff9b::/96"),     # NAT64 well-known prefix (RFC 6052)
    ipaddress.IPv6Network("::/96"),            # IPv4-compatible (deprecated, RFC 4291)
)
# NAT64 local-use (RFC 8215): a translator inside the operator's own network, and where
# the IPv4 address sits depends on a prefix length only that operator knows.
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def carried_ipv4(address: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, which is where a connection to it goes
    (through the kernel, a NAT64 or 6to4 gateway, a Teredo relay); None if it carries none."""
    ip = ipaddress.ip_address(address)
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]  # the client, de-obfuscated
    if any(ip in network for network in _IPV4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def is_public_address(address: str) -> bool:
    """True for a global unicast address; an address carrying an IPv4 one is judged by
    the IPv4 address. Raises ValueError if `address` is not an IP address."""
    ip = ipaddress.ip_address(address)
    if ip in _NAT64_LOCAL_USE:
        return False
    ip = carried_ipv4(address) or ip
    return ip.is_global and not ip.is_multicast


def validate_upstream_base_url(url: str, *, allow_private: bool,
                               what: str = "The provider base URL") -> None:
    """Raise ValidationError unless `url` is an http(s) URL to a public host.

    With `allow_private` (COGNITUDE_ALLOW_PRIVATE_UPSTREAMS) private, loopback and
    link-local hosts are accepted: local models and the fake upstream live there.
    `what` names the URL in the messages (alert webhooks are checked here too).
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValidationError(f"{what} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"{what} must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise ValidationError(f"{what} has no host")
    if parts.username or parts.password:
        raise ValidationError("Put the provider key in the key field, not in the URL"
                              if what == "The provider base URL"
                              else f"{what} must not carry a user name or password")
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
            carried = carried_ipv4(address)
            shown = f"{address} (which carries {carried})" if carried else address
            raise ValidationError(
                f"{host} resolves to {shown}, a private, loopback or link-local address; "
                "set COGNITUDE_ALLOW_PRIVATE_UPSTREAMS=true to allow it"
            )


class PrivateAddressRefused(OSError):
    """A connection to a private, loopback or link-local address was not made."""

    def __init__(self) -> None:
        # The same text for every address: aiohappyeyeballs then raises this error
        # itself, not a combined OSError, when all of a name's addresses are refused.
        super().__init__(errno.EACCES, "The URL points to a private address")


# What aiohttp's TCPConnector hands its socket_factory (aiohttp.AddrInfoType), spelled
# out so that this module needs no aiohttp.
AddrInfo = tuple[int, int, int, str, tuple]


def public_socket(addr_info: AddrInfo) -> socket.socket:
    """aiohttp's socket factory for every session that connects to a URL a tenant gave
    (providers, alert webhooks): it sees the address of every connection the session
    makes, whatever produced it (a resolved name, an IP literal, which aiohttp connects
    to without a resolver, a proxy), so nothing reaches the operator's own network.

    URLs are checked when saved too, but a name can be re-pointed afterwards (DNS
    rebinding) and a URL can be stored while private upstreams were allowed.
    """
    family, type_, proto, _, sockaddr = addr_info
    if not settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS:
        try:
            public = is_public_address(sockaddr[0])
        except ValueError:
            public = False
        if not public:
            raise PrivateAddressRefused
    return socket.socket(family, type_, proto)
