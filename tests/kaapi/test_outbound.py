"""The outbound guard (kaapi.outbound): address policy, URL checks, refusal at connect time (before any connect),
and what of a target's answer may reach the tenant."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import requests
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs.models import JobStatus, WebhookDelivery
from jobs.webhooks import validate_callback_url, webhook_attempt
from kaapi import outbound
from kaapi.outbound import AddressRefused, refusal_reason
from kaapi.outbound import guarded_session as _guarded_session
from tests.factories import job_row
from tests.fakes.webhook_receiver import WebhookReceiver


def guarded_session():
    """The webhooks' session: its policy is WEBHOOK_ALLOWED_NETWORKS."""
    from jobs.webhooks.services import _allowed_networks

    return _guarded_session(allowed_networks=_allowed_networks)


def webhook_refusal(address: str) -> str | None:
    from jobs.webhooks.services import _allowed_networks

    return refusal_reason(address, _allowed_networks())


REFUSED = [
    "169.254.169.254",  # cloud metadata (link-local)
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "127.0.0.1",
    "0.0.0.0",
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "::1",
    "fc00::1",  # unique-local
    "fe80::1",  # link-local
    "ff02::1",  # multicast
    "::ffff:10.0.0.1",  # IPv4-mapped private
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 around 169.254.169.254
    "2002:a00:1::1",  # 6to4 around 10.0.0.1
    "2002:7f00:1::1",  # 6to4 around 127.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, public client: Teredo itself is not globally routable
    "192.0.0.1",  # IETF protocol assignments
    "192.0.0.9",
    "192.0.0.170",  # NAT64 discovery
    "192.0.2.1",  # documentation
    "192.88.99.1",  # 6to4 relay anycast
    "198.18.0.1",  # benchmarking
    "198.19.255.254",
    "198.51.100.7",
    "203.0.113.9",
    "100.127.255.254",
    "0.1.2.3",  # this-network
    "255.255.255.255",
    "64:ff9b:1::a00:1",  # local-use NAT64
    "100::1",  # discard-only
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (2024)
    "5f00::1",  # SRv6 SIDs
    "fec0::1",  # site-local
    "::a00:1",  # IPv4-compatible
    "fe80::1%eth0",  # scoped link-local
]


@pytest.fixture
def connections_made(monkeypatch) -> list[tuple]:
    """Every socket connect of the test; one to anything but loopback fails the test before it is made."""
    made: list[tuple] = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        made.append(address)
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"the test tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return made


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused_by_default(address):
    assert refusal_reason(address, [])


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",  # mapped, NAT64 and 6to4 forms of a public IPv4 reach that address
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_pass(address):
    assert refusal_reason(address, []) is None


def test_a_refusal_names_the_ipv4_address_inside_an_ipv6_one():
    assert refusal_reason("2002:a9fe:a9fe::1", []) == (
        "2002:a9fe:a9fe::1 embeds 169.254.169.254 (6to4): 169.254.169.254 is a link-local address"
    )
    assert "10.0.0.1 (Teredo client)" in refusal_reason("2001:0:4136:e378:8000:63bf:f5ff:fffe", [])
    assert "198.18.0.0/15 (benchmarking)" in refusal_reason("198.18.0.1", [])


def test_an_allowed_network_opens_the_embedded_forms_only_through_the_ipv4_network():
    allowed = outbound.networks(["10.0.0.0/8"])
    assert refusal_reason("10.0.0.1", allowed) is None
    assert refusal_reason("::ffff:10.0.0.1", allowed) is None
    assert refusal_reason("2002:a00:1::1", allowed) is None  # 6to4 of 10.0.0.1 (2002::/16 itself is public)
    assert refusal_reason("2002:a9fe:a9fe::1", allowed)
    assert all(refusal_reason(address, outbound.ANY_NETWORK) is None for address in REFUSED)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1?",
        "https://api.example.com/v1#",
        "https://api.example.com/v1?x=/y",
        "https://user@api.example.com/v1",
        "https://user:pw@api.example.com/v1",
        "https://api.example.com\\@10.0.0.1/v1",
        "https://api.example.com/v1\r\nX: y",
        "https://api.example.com /v1",
    ],
)
def test_a_bare_url_has_no_user_info_query_or_fragment(url):
    assert outbound.url_problem(url, schemes=("https",), allowed=[], bare=True)
    assert outbound.url_problem("https://api.example.com/v1", schemes=("https",), allowed=[], bare=True) is None


def _response(peer_address: str | None) -> requests.Response:
    response = requests.Response()
    response.peer_address = peer_address
    return response


def test_error_texts_are_short_and_never_a_non_public_answer():
    long = "x" * 100_000
    assert len(outbound.body_excerpt(_response("8.8.8.8"), long)) == outbound.ERROR_TEXT_CHARS
    assert outbound.body_excerpt(_response("8.8.8.8"), "line\nbreak") == "line break"
    for peer in ("127.0.0.1", "10.0.0.1", "2002:a00:1::1", None):  # None: not known, so not public
        assert outbound.body_excerpt(_response(peer), "secret internal page") == outbound.NON_PUBLIC_BODY


def test_the_response_says_which_address_answered(settings, connections_made):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with WebhookReceiver() as receiver:
        response = guarded_session().post(receiver.url("/peer"), data=b"{}", timeout=5)
    assert response.peer_address == "127.0.0.1" and not outbound.peer_is_public(response)


@pytest.mark.django_db
def test_a_delivery_error_never_carries_what_a_non_public_receiver_answered(project, settings):
    """A receiver in an allowed private network (WEBHOOK_ALLOWED_NETWORKS) answers an error: last_error, which the
    tenant reads through the API, has the status, not the body or the Location."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with WebhookReceiver() as receiver:
        receiver.script("/error", [500])
        receiver.script("/moved", [(302, {"Location": "http://10.0.0.1/internal/admin"})])
        errors = {}
        for path in ("/error", "/moved"):
            job = job_row(project, status=JobStatus.SUCCESS)
            delivery = WebhookDelivery.objects.create(
                job=job, url=receiver.url(path), event="job.succeeded", payload={}, next_attempt_at=timezone.now()
            )
            assert webhook_attempt(delivery_id=str(delivery.id)) == "retrying"
            errors[path] = WebhookDelivery.objects.get(pk=delivery.pk).last_error
    assert errors == {
        "/error": f"HTTP 500: {outbound.NON_PUBLIC_BODY}",
        "/moved": f"redirect (302) to {outbound.NON_PUBLIC_BODY} not followed",
    }


def test_allowlist_opens_only_the_named_networks(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "10.1.0.0/16"]
    assert webhook_refusal("127.0.0.1") is None
    assert webhook_refusal("10.1.2.3") is None
    assert webhook_refusal("10.2.0.1")
    assert webhook_refusal("169.254.169.254")
    assert webhook_refusal("::1")  # an IPv4 network does not open IPv6 loopback


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # http is not allowed by default
        "ftp://example.com/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https:///nohost",
        "https://example.com:99999/",
    ],
)
def test_submission_refuses_urls_that_can_never_be_delivered(url):
    with pytest.raises(ValidationError):
        validate_callback_url(url)


def test_submission_accepts_https_host_names_without_resolving_them(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("resolved at submission"))
    validate_callback_url("https://hooks.example.com/kaapi?x=1")


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/"])
def test_connect_time_guard_refuses_before_connecting(url, connections_made):
    with pytest.raises(AddressRefused, match="refused to connect"):
        guarded_session().post(url, data=b"{}", timeout=(1, 1))
    assert connections_made == []


def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(monkeypatch, connections_made):
    def resolve(host, port, *args, **kwargs):
        assert host == "hooks.internal.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(AddressRefused, match="10.0.0.1 is a private address"):
        guarded_session().post("https://hooks.internal.example/hook", data=b"{}", timeout=(1, 1))
    assert connections_made == []


def test_the_checked_address_is_the_one_connected_to(monkeypatch, settings, connections_made):
    """A name answering a refused and an allowed address: only the allowed one is dialled (pinned)."""
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host == "rebind.example":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with WebhookReceiver() as receiver:
        response = guarded_session().post(f"http://rebind.example:{receiver.port}/pin", data=b"{}", timeout=5)
        assert response.status_code == 200
        assert receiver.requests("/pin")[0].headers["host"] == f"rebind.example:{receiver.port}"
    assert [address[0] for address in connections_made] == ["127.0.0.1"]


def test_localhost_is_refused_under_default_settings(connections_made):
    with WebhookReceiver() as receiver:
        with pytest.raises(AddressRefused, match="loopback"):
            guarded_session().post(receiver.url("/x", host="localhost"), data=b"{}", timeout=(1, 1))
        assert receiver.requests() == []
    assert connections_made == []


def test_environment_proxies_are_ignored(monkeypatch, connections_made):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(AddressRefused):
        guarded_session().post("http://10.0.0.1/hook", data=b"{}", timeout=(1, 1))
    assert connections_made == []
