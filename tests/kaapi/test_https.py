"""HTTPS in production: `check --deploy` is clean with the documented environment, and behind the TLS proxy the
URLs the API hands out are https while the probes stay reachable over plain HTTP."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tenancy.services import api_key_create

ROOT = Path(__file__).resolve().parents[2]


def production_environment(tmp_path: Path) -> dict[str, str]:
    """What docker-compose gives the web container: the active lines of .env.example (with a SECRET_KEY generated
    as its comment says) and the x-app environment of docker-compose.yml."""
    env_file = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    env_file["SECRET_KEY"] = secrets.token_urlsafe(50)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-app"]["environment"]
    substitute = re.compile(r"\$\{([A-Z_]+)[^}]*\}")
    env = {**env_file, **{name: substitute.sub(lambda m: env_file[m[1]], value) for name, value in compose.items()}}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)  # the compose volume's path does not exist here
    return {"PATH": "/usr/bin:/bin", **env}


def test_check_deploy_is_clean_with_the_production_environment(tmp_path):
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_environment(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


@pytest.mark.parametrize("value", ["X-Forwarded-Proto: https", "X_Forwarded Proto"])
def test_a_malformed_proxy_header_stops_startup(value):
    env = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "x", "SECURE_PROXY_SSL_HEADER": value}
    proc = subprocess.run([sys.executable, "-c", "import kaapi.settings"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "SECURE_PROXY_SSL_HEADER" in proc.stderr


def test_behind_the_tls_proxy_status_url_and_location_are_https(start_web, project):
    web = start_web(env={"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto", "SECURE_SSL_REDIRECT": "true"})
    host = f"127.0.0.1:{web.port}"
    key = {"X-API-KEY": api_key_create(project=project).plaintext}

    via_proxy = requests.post(
        f"{web.url}/api/v1/jobs/echo/",
        json={"params": {}},
        headers={**key, "X-Forwarded-Proto": "https"},
        timeout=10,
    )
    assert via_proxy.status_code == 202, via_proxy.text
    status_url = via_proxy.json()["status_url"]
    assert status_url == f"https://{host}/api/v1/jobs/{via_proxy.json()['job_id']}/"
    assert via_proxy.headers["Location"] == status_url
    assert "max-age=" in via_proxy.headers["Strict-Transport-Security"]

    plain = requests.post(f"{web.url}/api/v1/jobs/echo/", json={"params": {}}, headers=key, timeout=10,
                          allow_redirects=False)  # fmt: skip
    assert plain.status_code == 301 and plain.headers["Location"] == f"https://{host}/api/v1/jobs/echo/"

    for probe in ("/healthz", "/readyz"):  # load balancers and compose probe over plain HTTP
        assert requests.get(f"{web.url}{probe}", timeout=10, allow_redirects=False).status_code == 200, probe
