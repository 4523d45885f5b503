"""kaapi/settings.py read with an empty environment gives exactly the defaults docs/configuration.md documents.

The variable names and defaults are deployed: a default that changes without its line in the docs fails here.
"""

import json
import re
import subprocess
import sys

from tests.kaapi.test_deployment import ROOT, settings_variables

# The settings module read in a fresh interpreter; prints {variable: value} for the names given as arguments.
DUMP = """
import json, sys
from django.conf import settings
values = {}
for name in sys.argv[1:]:
    if name == "CELERY_TASK_PUBLISH_MAX_RETRIES":
        values[name] = settings.CELERY_TASK_PUBLISH_RETRY_POLICY["max_retries"]
    elif name == "SECURE_PROXY_SSL_HEADER":
        values[name] = settings.SECURE_PROXY_SSL_HEADER
    else:
        values[name] = getattr(settings, name)
print(json.dumps({"BASE_DIR": str(settings.BASE_DIR), "values": values}, default=str))
"""


def read_settings(names: list[str], **env: str) -> tuple[str, dict]:
    full_env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "kaapi.settings", **env}
    proc = subprocess.run(
        [sys.executable, "-c", DUMP, *names], cwd=ROOT, env=full_env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return out["BASE_DIR"], out["values"]


def documented_defaults() -> dict[str, str]:
    """{variable: its default column} from docs/configuration.md."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    return dict(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*?) \|", page, re.MULTILINE))


def as_documented(value, base_dir: str) -> str:
    """A setting's value written as the docs write a default."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value)
    return str(value).replace(f"{base_dir}/", "")


def test_every_documented_default_is_the_default_read_from_an_empty_environment():
    defaults = documented_defaults()
    names = sorted(settings_variables())
    assert set(names) <= set(defaults), "test_deployment checks that every variable is documented"
    # SECRET_KEY has no default outside DEBUG: the only variable set.
    base_dir, values = read_settings([name for name in names if name != "SECRET_KEY"], SECRET_KEY="not-a-default")
    mismatches = {}
    for name, value in values.items():
        literal = re.match(r"`([^`]*)`", defaults[name])
        if literal is None:
            # described in words ("unset", "CPU count", "derived from SECRET_KEY"): empty, worked out where it is used
            expected_ok = value in ("", None, [])
        elif literal[1] in values or literal[1] == "SECRET_KEY":
            # the default is another setting (`SECRET_KEY`, `DEBUG`)
            other = "not-a-default" if literal[1] == "SECRET_KEY" else values[literal[1]]
            expected_ok = value == other
        elif isinstance(value, int | float) and not isinstance(value, bool):
            expected_ok = float(literal[1]) == value
        else:
            expected_ok = as_documented(value, base_dir) == literal[1]
        if not expected_ok:
            mismatches[name] = (defaults[name], value)
    assert not mismatches, f"default read vs docs/configuration.md: {mismatches}"
    assert len(values) > 70  # every variable was compared


def test_values_are_read_strictly_where_django_environ_alone_is_lenient():
    _, values = read_settings(
        ["METRICS_TOKEN", "ALLOWED_HOSTS", "JOB_MAX_CONCURRENT_JOBS", "ECHO_MAX_DELAY_SECONDS"],
        SECRET_KEY="x",
        METRICS_TOKEN="$not-a-variable-name",  # a secret may start with "$"
        ALLOWED_HOSTS="a.example, b.example,",
        JOB_MAX_CONCURRENT_JOBS="",  # compose passes an unset variable as ""
        ECHO_MAX_DELAY_SECONDS="2.5",
    )
    assert values == {
        "METRICS_TOKEN": "$not-a-variable-name",
        "ALLOWED_HOSTS": ["a.example", "b.example"],
        "JOB_MAX_CONCURRENT_JOBS": 100,
        "ECHO_MAX_DELAY_SECONDS": 2.5,
    }
