"""The SSRF guard: webhooks reach only public addresses (or networks the settings allow).

The check runs at connect time, on the addresses DNS returned, and the socket connects to the address that
passed the check (the IP is pinned), so a name that resolves to a private address — or re-resolves to one
after a first harmless answer (DNS rebinding) — is refused before any packet is sent to it. TLS still
verifies the certificate against the host name of the URL.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """The callback URL's host resolves only to addresses the guard refuses."""


def _allowed_networks() -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.WEBHOOK_ALLOWED_NETWORKS]


def refusal_reason(address: str | IPAddress, allowed: list[Network] | None = None) -> str | None:
    """Why a connection to ``address`` is refused; None when it is not. ``allowed``: networks let through
    although they are not public (default: ``WEBHOOK_ALLOWED_NETWORKS``)."""
    allowed = _allowed_networks() if allowed is None else allowed
    ip = ipaddress.ip_address(str(address).split("%", 1)[0]) if isinstance(address, str) else address
    if any(ip in network for network in allowed if network.version == ip.version):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            return refusal_reason(embedded, allowed)
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("unique-local" if ip.version == 6 else "private", ip.is_private),
        ("not globally routable", not ip.is_global),
    )
    for reason, matches in checks:
        if matches:
            return f"{ip} is a {reason} address" if reason != "not globally routable" else f"{ip} is {reason}"
    return None


def validate_callback_url(url: str) -> None:
    """Refuse, at submission, a callback URL that can never be delivered.

    Checks the scheme and, when the host is an IP literal, the address. Host names are checked when the
    delivery connects (after DNS resolution): that is the real guard.
    """
    if not url:
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValidationError({"callback_url": [f"not a valid URL: {exc}"]}) from None
    schemes = ("https", "http") if settings.WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in schemes:
        raise ValidationError({"callback_url": [f"the callback URL must use {' or '.join(schemes)}"]})
    if not host:
        raise ValidationError({"callback_url": ["the callback URL has no host"]})
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return
    reason = refusal_reason(literal)
    if reason:
        raise ValidationError({"callback_url": [f"callbacks to this address are not allowed: {reason}"]})


# --- Connect-time enforcement ---------------------------------------------------------------------
def _guarded_new_conn(conn: HTTPConnection) -> socket.socket:
    """Resolve, check every address, connect only to one that passed (the IP is pinned for this socket)."""
    try:
        infos = socket.getaddrinfo(conn._dns_host, conn.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    allowed, refused = [], []
    networks = conn.allowed_networks()
    for *_, sockaddr in infos:
        reason = refusal_reason(sockaddr[0], networks)
        (refused if reason else allowed).append(reason or sockaddr[0])
    if not allowed:
        raise AddressRefused(f"refused to connect to {conn.host}: {'; '.join(dict.fromkeys(refused))}")
    last_error: OSError | None = None
    for address in dict.fromkeys(allowed):
        try:
            return urllib3_connection.create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from exc
        except OSError as exc:
            last_error = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}") from last_error


class GuardedHTTPConnection(HTTPConnection):
    allowed_networks = staticmethod(_allowed_networks)

    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)


class GuardedHTTPSConnection(HTTPSConnection):
    allowed_networks = staticmethod(_allowed_networks)

    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedHTTPAdapter(HTTPAdapter):
    """A pooled adapter whose every new connection goes through the address check.

    ``allowed_networks`` returns the networks let through although not public; by default the webhooks'
    ``WEBHOOK_ALLOWED_NETWORKS`` (LLM providers pass their own policy).
    """

    def __init__(self, *args, allowed_networks: Callable[[], list[Network]] | None = None, **kwargs) -> None:
        self._pool_classes = {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}
        if allowed_networks is not None:
            policy = {"allowed_networks": staticmethod(allowed_networks)}
            http = type("GuardedHTTPConnection", (GuardedHTTPConnection,), policy)
            https = type("GuardedHTTPSConnection", (GuardedHTTPSConnection,), policy)
            self._pool_classes = {
                "http": type("GuardedHTTPConnectionPool", (GuardedHTTPConnectionPool,), {"ConnectionCls": http}),
                "https": type("GuardedHTTPSConnectionPool", (GuardedHTTPSConnectionPool,), {"ConnectionCls": https}),
            }
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)


def guarded_session() -> requests.Session:
    """A pooled session for webhooks. Proxies from the environment are ignored: a proxy would connect for
    us to addresses the guard never saw."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedHTTPAdapter(pool_connections=10, pool_maxsize=10, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
