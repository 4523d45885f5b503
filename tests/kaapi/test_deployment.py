"""docker-compose.yml, Dockerfile, .env.example and the docs agree with the code (no Docker engine needed).

Every Kaapi service's command is parsed as its program would parse it: a `manage.py` command by its own argument
parser, a `celery -A kaapi` command by Celery's CLI (so a bad pool, option or queue fails here, not in
production). Every variable docker-compose.yml uses and every key of .env.example is read by kaapi/settings.py,
except the few that only the infrastructure containers read (COMPOSE_ONLY).
"""

import importlib
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli
from django.core.management import get_commands, load_command_class

from kaapi.celery import HIGH_PRIORITY_QUEUE, QUEUE_MAX_PRIORITY, app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
# Read by docker-compose.yml itself and the images of PostgreSQL, RabbitMQ and Flower's command, not by Kaapi.
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_BASIC_AUTH"}
INFRASTRUCTURE = {"postgres", "rabbitmq", "redis"}
APP_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)


def settings_variables() -> set[str]:
    source = (ROOT / "kaapi" / "settings.py").read_text()
    # every read goes through django-environ's reader: env.str("NAME", ...), env.int(...), env.list(...)
    return set(re.findall(r"""\benv\.(?:str|bool|int|float|list|url|db)\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))


def test_every_settings_read_names_its_variable_literally():
    # settings_variables() finds the reads by their literal names: a read through another spelling would slip past
    # the checks below, so there is none.
    source = (ROOT / "kaapi" / "settings.py").read_text()
    reads = re.findall(r"\benv(?:\.\w+)?\(", source)
    assert "os.environ.get(" not in source and "os.getenv(" not in source
    assert len(reads) - source.count("env.db_url_config(") == len(re.findall(r"\benv\.\w+\(\s*[\"'][A-Z]", source))
    assert len(settings_variables()) > 70


def env_example_keys() -> set[str]:
    # active lines and commented-out defaults ("# NAME=value") both list a variable
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))


def compose_variables() -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_TEXT))


def celery_subcommand(argv: list[str]) -> tuple[str, click.Context]:
    """Parse ``celery -A kaapi <sub> ...`` with Celery's own CLI; raises click's errors on a bad invocation."""
    assert argv[:3] == ["celery", "-A", "kaapi"], argv
    sub, rest = argv[3], argv[4:]
    parent = click.Context(celery_cli, obj=CLIContext(app=app, no_color=True, workdir=None, quiet=True))
    command = celery_cli.get_command(parent, sub)
    assert command is not None, f"celery has no subcommand {sub!r}"
    return sub, command.make_context(sub, list(rest), parent=parent)


def kind_of(argv: list[str]) -> str:
    """Check a service command; return what it runs: "manage.py <name>", "celery <sub>" or "gunicorn"."""
    if argv[:2] == ["python", "manage.py"]:
        name, args = argv[2], argv[3:]
        commands = get_commands()
        assert name in commands, f"manage.py has no command {name!r}"
        load_command_class(commands[name], name).create_parser("manage.py", name).parse_args(args)
        return f"manage.py {name}"
    if argv[0] == "celery":
        sub, ctx = celery_subcommand(argv)
        assert sub in {"worker", "beat", "flower"}, sub
        if sub == "worker":
            assert ctx.params["queues"], f"a worker without -Q consumes only the default queue: {argv}"
            assert set(ctx.params["queues"]) <= set(QUEUE_MAX_PRIORITY), ctx.params["queues"]
        return f"celery {sub}"
    if argv[0] == "gunicorn":
        module, _, attribute = argv[1].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute or "application"))
        return "gunicorn"
    raise AssertionError(f"not a manage.py, celery -A kaapi or gunicorn command: {argv}")


def test_every_kaapi_service_runs_a_real_command():
    kinds = {name: kind_of(SERVICES[name]["command"]) for name in APP_SERVICES}
    assert kinds == {
        "migrate": "manage.py migrate",
        "web": "gunicorn",
        "worker-high": "celery worker",
        "worker-low": "celery worker",
        "worker-cron": "celery worker",
        "beat": "manage.py run_beat",
        "flower": "celery flower",
    }
    assert set(SERVICES) == set(APP_SERVICES) | INFRASTRUCTURE


def test_the_workers_cover_every_queue_once_and_high_priority_uses_the_io_pool():
    consumed = {}
    for name in APP_SERVICES:
        argv = SERVICES[name]["command"]
        if argv[:4] == ["celery", "-A", "kaapi", "worker"]:
            _, ctx = celery_subcommand(argv)
            for queue in ctx.params["queues"]:
                assert queue not in consumed, f"{queue} consumed by {consumed.get(queue)} and {name}"
                consumed[queue] = (name, ctx.params["pool"].__module__)
    assert set(consumed) == set(QUEUE_MAX_PRIORITY)
    assert consumed[HIGH_PRIORITY_QUEUE] == ("worker-high", "celery.concurrency.gevent")


def test_exactly_one_beat_and_it_cannot_be_replicated():
    beats = [n for n in APP_SERVICES if "run_beat" in SERVICES[n]["command"] or "beat" in SERVICES[n]["command"][3:4]]
    assert beats == ["beat"]
    assert SERVICES["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_services_have_health_checks_and_wait_for_migrations():
    for name in [*INFRASTRUCTURE, "web", "worker-high", "worker-low", "worker-cron", "flower"]:
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in set(APP_SERVICES) - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        for infrastructure in INFRASTRUCTURE:
            assert SERVICES[name]["depends_on"][infrastructure] == {"condition": "service_healthy"}, name
    assert SERVICES["migrate"]["restart"] == "no"


def test_the_kaapi_services_share_one_definition():
    definition = COMPOSE["x-app"]
    assert "&app" in COMPOSE_TEXT
    for name in APP_SERVICES:
        assert SERVICES[name]["build"] == definition["build"] and SERVICES[name]["image"] == definition["image"]
        assert SERVICES[name]["environment"] == definition["environment"], name
    # all Kaapi processes share one metrics directory, so /metrics adds up every worker's samples
    assert "PROMETHEUS_MULTIPROC_DIR" in definition["environment"]


def test_every_variable_compose_uses_is_read_by_the_settings():
    known = settings_variables()
    assert {"DATABASE_URL", "RABBITMQ_URL", "SECRET_KEY", "LOG_FORMAT"} <= known  # the parser works
    assert compose_variables() - COMPOSE_ONLY <= known
    assert set(COMPOSE["x-app"]["environment"]) <= known
    assert COMPOSE_ONLY <= compose_variables(), "a COMPOSE_ONLY variable is no longer used: drop it"


def test_env_example_lists_every_variable_and_only_real_ones():
    keys, known = env_example_keys(), settings_variables()
    assert keys - COMPOSE_ONLY <= known, f"not read by the settings: {sorted(keys - COMPOSE_ONLY - known)}"
    assert known <= keys, f"missing from .env.example: {sorted(known - keys)}"
    assert COMPOSE_ONLY <= keys


def test_configuration_page_has_every_variable():
    readme = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", readme, re.MULTILINE))
    missing = (settings_variables() | COMPOSE_ONLY) - documented
    assert not missing, f"docs/configuration.md misses {sorted(missing)}"


@pytest.mark.parametrize(
    "line",
    ["FROM python:3.11-slim", "COPY requirements.lock .", "RUN pip install --require-hashes -r requirements.lock"],
)
def test_dockerfile_installs_from_the_hashed_lock(line):
    assert line in (ROOT / "Dockerfile").read_text().splitlines()


def test_make_and_ci_install_from_the_hashed_locks_and_check_them():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements-dev.lock" in makefile
    assert "$(VENV)/.installed: requirements.lock requirements-dev.lock" in makefile
    assert not re.search(r"pip install[^\n]*-r requirements(-dev)?\.txt", makefile)
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("make lock-check") < ci.index("make test")


def test_make_lint_runs_ruff_and_mypy_and_ci_runs_it_before_the_tests():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lint: venv\n((?:\t[^\n]*\n)+)", makefile, re.MULTILINE)
    assert recipe and "ruff check" in recipe[1] and "ruff format --check" in recipe[1] and "mypy" in recipe[1]
    mypy_ini = (ROOT / "mypy.ini").read_text()
    assert "mypy_django_plugin.main" in mypy_ini and "mypy_drf_plugin.main" in mypy_ini
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make lint || status=$?" in ci and ci.index("make lint") < ci.index("make test")


def _pins(path: Path) -> dict[str, str]:
    """{normalized name: version} of the ``name==version`` lines of a requirements file (extras dropped)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


@pytest.mark.parametrize(
    ("inputs", "lock"),
    [
        (["requirements.txt"], "requirements.lock"),
        (["requirements.txt", "requirements-dev.txt"], "requirements-dev.lock"),
    ],
)
def test_every_direct_pin_is_in_its_lock_at_the_same_version_with_hashes(inputs, lock):
    locked = _pins(ROOT / lock)
    for name in inputs:
        for package, version in _pins(ROOT / name).items():
            assert locked.get(package) == version, f"{name} pins {package}=={version}, {lock} has {locked.get(package)}"
    # every package of the lock carries its hashes (a block: the requirement line and its continuation lines)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
    unhashed = [block.split()[0] for block in blocks if "==" in block and "--hash=sha256:" not in block]
    assert not unhashed and len(blocks) > len(_pins(ROOT / inputs[-1]))


def flower_broker_api(argv: list[str]) -> str:
    """The value of Flower's --broker_api (tornado accepts it as --broker-api too), checked to be an option Flower
    defines."""
    from flower.options import options

    assert options._normalize_name("broker_api") in options._options
    values = [arg.split("=", 1)[1] for arg in argv if re.match(r"--broker[_-]api=", arg)]
    assert len(values) == 1, argv
    return values[0]


def substituted(value: str) -> str:
    """``value`` with each ``${NAME...}`` of docker-compose replaced by NAME."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}", r"\1", value)


def test_flower_in_compose_reads_the_brokers_management_api():
    argv = SERVICES["flower"]["command"]
    assert kind_of(argv) == "celery flower"
    api = urlsplit(substituted(flower_broker_api(argv)))
    broker = urlsplit(substituted(COMPOSE["x-app"]["environment"]["RABBITMQ_URL"]))
    assert (api.scheme, api.hostname, api.path) == ("http", "rabbitmq", "/api/")
    assert api.port == 15672 and SERVICES["rabbitmq"]["image"].endswith("-management")
    assert (api.username, api.password) == (broker.username, broker.password)


def test_make_run_gives_flower_the_dev_nodes_management_api():
    run_sh = (ROOT / "scripts" / "run.sh").read_text()
    [flower] = [line for line in run_sh.splitlines() if "kaapi flower" in line]
    assert '--broker_api="$FLOWER_BROKER_API"' in flower
    # The lines of run.sh that compute it, evaluated with the dev profile's environment.
    computing = [line for line in run_sh.splitlines() if line.startswith(("rabbit_credentials=", "FLOWER_BROKER_API="))]
    script = "\n".join(['eval "$(scripts/services.sh env dev)"', *computing, 'printf %s "$FLOWER_BROKER_API"'])
    api = urlsplit(subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    env = dict(re.findall(r"export (\w+)=(\S+)", scripts_env("dev")))
    broker = urlsplit(env["RABBITMQ_URL"])
    assert (api.scheme, api.hostname, api.path) == ("http", "127.0.0.1", "/api/")
    assert api.port == int(env["KAAPI_RABBITMQ_MANAGEMENT_PORT"]) != 15672
    assert (api.username, api.password) == (broker.username, broker.password)


def scripts_env(profile: str) -> str:
    return subprocess.run(
        ["scripts/services.sh", "env", profile], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
