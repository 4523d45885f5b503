"""Outbound HTTP to places a tenant chooses (webhook receivers, LLM provider base URLs): the SSRF guard.

The address check runs at connect time, on the addresses DNS returned, and the socket connects to the address
that passed (the IP is pinned), so a name that resolves to a private address — or re-resolves to one after a
first harmless answer (DNS rebinding) — is refused before any packet is sent to it. TLS still verifies the
certificate against the host name of the URL. Proxies from the environment are ignored: a proxy would connect
for us to addresses the guard never saw.

Each caller brings its policy: the networks let through although they are not public (webhooks:
``WEBHOOK_ALLOWED_NETWORKS``; providers: every network with ``LLM_ALLOW_PRIVATE_BASE_URLS``, none otherwise).
What comes back from a target to the tenant (an error text) is short, and never the body of a non-public target.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NetworkPolicy = Callable[[], list[Network]]

ANY_NETWORK: list[Network] = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
# Longest error text handed back to a tenant (a delivery's last_error, a provider error in job.error).
ERROR_TEXT_CHARS = 500
NON_PUBLIC_BODY = "(not shown: a non-public address answered)"

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IANA special-purpose ranges (iana-ipv4/ipv6-special-registry) that are not globally reachable, refused whatever
# the running Python's ipaddress tables say (they vary between patch releases, and miss the newer entries).
_SPECIAL_PURPOSE: list[tuple[Network, str]] = [
    (ipaddress.ip_network(cidr), name)
    for cidr, name in [
        ("0.0.0.0/8", "this-network"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("240.0.0.0/4", "reserved"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("100:0:0:1::/64", "dummy prefix"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing (SRv6) SIDs"),
        ("fec0::/10", "site-local (deprecated)"),
    ]
]


class AddressRefused(Exception):
    """The URL's host resolves only to addresses the policy refuses."""


def networks(cidrs: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses that a packet to ``ip`` ends up reaching: mapped, NAT64 (well-known prefix), 6to4, Teredo."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(("IPv4-mapped", ip.ipv4_mapped))
    if ip in _NAT64:
        found.append(("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    if ip.sixtofour is not None:
        found.append(("6to4", ip.sixtofour))
    if ip.teredo is not None:
        server, client = ip.teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    return found


def refusal_reason(address: str | IPAddress, allowed: list[Network]) -> str | None:
    """Why a connection to ``address`` is refused; None when it is not. ``allowed``: networks let through
    although they are not public."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0]) if isinstance(address, str) else address
    if any(ip in network for network in allowed if network.version == ip.version):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        for form, inner in embedded:
            reason = refusal_reason(inner, allowed)
            if reason:
                return f"{ip} embeds {inner} ({form}): {reason}"
        # Mapped and NAT64 addresses reach only the IPv4 address they carry, which passed.
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return None
    for reason, matches in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("an unspecified address", ip.is_unspecified),
    ):
        if matches:
            return f"{ip} is {reason}"
    for network, name in _SPECIAL_PURPOSE:
        if ip.version == network.version and ip in network:
            return f"{ip} is in {network} ({name})"
    for reason, matches in (
        ("a reserved address", ip.is_reserved),
        ("a unique-local address" if ip.version == 6 else "a private address", ip.is_private),
        ("not globally routable", not ip.is_global),
    ):
        if matches:
            return f"{ip} is {reason}"
    return None


_NOT_IN_A_BARE_URL = re.compile(r"[\x00-\x20\x7f\\?#@]")


def url_problem(url: str, *, schemes: tuple[str, ...], allowed: list[Network], bare: bool = False) -> str | None:
    """What makes ``url`` unusable as an outbound target, or None. Checks the scheme, the host, the port and, when
    the host is an IP literal, the address (host names are checked when connecting: that is the real guard).

    ``bare``: a base that paths are appended to (an LLM base URL) carries no user info, query or fragment, even
    empty ones: ``https://provider.example/v1?`` + ``/chat/completions`` would post wherever the tenant likes.
    """
    if bare:
        bad = _NOT_IN_A_BARE_URL.search(url)
        if bad:
            return f"must not contain {bad.group()!r} (no user info, query, fragment, spaces or control characters)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    if parts.scheme not in schemes:
        return f"must use {' or '.join(schemes)}"
    if not host:
        return "has no host"
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return None
    reason = refusal_reason(literal, allowed)
    return f"points to an address that is not allowed: {reason}" if reason else None


# --- Connect-time enforcement ---------------------------------------------------------------------
def _guarded_new_conn(conn: GuardedHTTPConnection | GuardedHTTPSConnection) -> socket.socket:
    """Resolve, check every address, connect only to one that passed (the IP is pinned for this socket)."""
    try:
        infos = socket.getaddrinfo(conn._dns_host, conn.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    passed: list[str] = []
    refused: list[str] = []
    allowed = conn.allowed_networks()
    for *_, sockaddr in infos:
        reason = refusal_reason(str(sockaddr[0]), allowed)
        (refused if reason else passed).append(reason or str(sockaddr[0]))
    if not passed:
        raise AddressRefused(f"refused to connect to {conn.host}: {'; '.join(dict.fromkeys(refused))}")
    last_error: OSError | None = None
    for address in dict.fromkeys(passed):
        try:
            sock = urllib3_connection.create_connection(
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
            continue
        conn.peer_address = address
        return sock
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}") from last_error


class GuardedHTTPConnection(HTTPConnection):
    allowed_networks: NetworkPolicy = staticmethod(list)
    peer_address: str | None = None

    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)


class GuardedHTTPSConnection(HTTPSConnection):
    allowed_networks: NetworkPolicy = staticmethod(list)
    peer_address: str | None = None

    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)


class GuardedHTTPAdapter(HTTPAdapter):
    """A pooled adapter whose every new connection goes through the address check under ``allowed_networks``
    (called at each new connection), and whose responses say which address answered (``peer_address``)."""

    def __init__(self, *args, allowed_networks: NetworkPolicy, **kwargs) -> None:
        policy = {"allowed_networks": staticmethod(allowed_networks)}
        http = type("GuardedHTTPConnection", (GuardedHTTPConnection,), policy)
        https = type("GuardedHTTPSConnection", (GuardedHTTPSConnection,), policy)
        self._pool_classes = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)

    def build_response(self, req, resp) -> requests.Response:
        response = super().build_response(req, resp)
        # The body is not read yet, so the response still holds the connection it came on.
        # an attribute of our own on the response (type: ignore)
        response.peer_address = getattr(resp.connection, "peer_address", None)  # type: ignore[attr-defined]
        return response


def guarded_session(*, allowed_networks: NetworkPolicy, pool_connections: int = 10, pool_maxsize: int = 10):
    """A pooled session whose connections pass the guard; no retries, no environment proxies."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedHTTPAdapter(
        allowed_networks=allowed_networks, pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- What goes back to the tenant -----------------------------------------------------------------------
def peer_is_public(response: requests.Response) -> bool:
    """The response came from a public address (False when unknown: not through a guarded session)."""
    address = getattr(response, "peer_address", None)
    return address is not None and refusal_reason(address, []) is None


def short(text: str, limit: int = ERROR_TEXT_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def body_excerpt(response: requests.Response, text: str, limit: int = ERROR_TEXT_CHARS) -> str:
    """``text``, read from ``response``'s body, fit for an error text: short, and only from a public address (a
    private service reached through an allowed network may answer with what the tenant must not read)."""
    return short(text, limit) if peer_is_public(response) else NON_PUBLIC_BODY
