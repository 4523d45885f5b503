"""The JSON body limit through the production web server: gunicorn answers 413 from the Content-Length while the
client has sent only the headers, instead of holding a worker (and the body's memory) until the body arrives."""

from __future__ import annotations

import socket

import pytest

from tenancy.services import api_key_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(start_web, project):
    web = start_web(workers=1)
    key = api_key_create(project=project).plaintext
    declared = 64 * 1024 * 1024
    request = (
        "POST /api/v1/jobs/echo/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{web.port}\r\n"
        f"X-API-KEY: {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n"
        "\r\n"
        '{"params": {"padding": "'
    ).encode()
    with socket.create_connection(("127.0.0.1", web.port), timeout=20) as sock:
        sock.sendall(request)  # the rest of the 64 MiB never comes: only an answer from the headers can arrive
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
