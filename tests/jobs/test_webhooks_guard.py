"""The SSRF guard: address policy, submission checks, and refusal at connect time (before any connect)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from django.core.exceptions import ValidationError

from jobs.webhooks import AddressRefused, refusal_reason, validate_callback_url
from jobs.webhooks.guard import guarded_session
from tests.fakes.webhook_receiver import WebhookReceiver

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
    assert refusal_reason(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert refusal_reason(address) is None


def test_allowlist_opens_only_the_named_networks(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "10.1.0.0/16"]
    assert refusal_reason("127.0.0.1") is None
    assert refusal_reason("10.1.2.3") is None
    assert refusal_reason("10.2.0.1")
    assert refusal_reason("169.254.169.254")
    assert refusal_reason("::1")  # an IPv4 network does not open IPv6 loopback


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
