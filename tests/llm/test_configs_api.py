import threading

import pytest
from django.db import connection

from llm.models import Config, ConfigVersion
from llm.services import config_create, config_version_create
from tests.llm.conftest import BLOBS

pytestmark = pytest.mark.django_db


def create(client, name="bot", blob=None, **extra):
    return client.post(
        "/api/v1/configs/",
        {"name": name, "blob": blob or BLOBS["openai"], "commit_message": "first", **extra},
        format="json",
    )


def test_create_makes_version_one_and_versions_count_up(api_client):
    resp = create(api_client, description="support bot")
    assert resp.status_code == 201, resp.content
    config = resp.json()
    assert config["name"] == "bot" and config["description"] == "support bot" and config["latest_version"] == 1

    for n, provider in [(2, "anthropic"), (3, "openai-chat")]:
        resp = api_client.post(
            f"/api/v1/configs/{config['id']}/versions/", {"blob": BLOBS[provider], "commit_message": f"v{n}"}, "json"
        )
        assert resp.status_code == 201, resp.content
        assert resp.json()["version"] == n
        assert resp.json()["blob"] == BLOBS[provider]

    listed = api_client.get(f"/api/v1/configs/{config['id']}/versions/").json()
    assert [v["version"] for v in listed["results"]] == [1, 2, 3]
    assert [v["commit_message"] for v in listed["results"]] == ["first", "v2", "v3"]
    v2 = api_client.get(f"/api/v1/configs/{config['id']}/versions/2/")
    assert v2.status_code == 200 and v2.json()["blob"] == BLOBS["anthropic"]
    assert api_client.get(f"/api/v1/configs/{config['id']}/versions/9/").status_code == 404
    assert api_client.get(f"/api/v1/configs/{config['id']}/").json()["latest_version"] == 3


def test_invalid_blob_is_refused_with_the_field_named(api_client):
    bad = {"completion": {"provider": "openai", "params": {"model": "m", "temperature": 7}}}
    resp = create(api_client, blob=bad)
    assert resp.status_code == 400
    assert "completion.params.temperature" in resp.json()
    config = create(api_client).json()
    resp = api_client.post(f"/api/v1/configs/{config['id']}/versions/", {"blob": bad}, format="json")
    assert resp.status_code == 400 and "completion.params.temperature" in resp.json()
    assert ConfigVersion.objects.filter(config_id=config["id"]).count() == 1


def test_names_are_unique_among_live_configs_and_freed_by_delete(api_client):
    first = create(api_client).json()
    resp = create(api_client)
    assert resp.status_code == 400 and "already exists" in resp.json()["name"][0]
    other = create(api_client, name="other").json()
    resp = api_client.patch(f"/api/v1/configs/{other['id']}/", {"name": "bot"}, format="json")
    assert resp.status_code == 400

    assert api_client.delete(f"/api/v1/configs/{first['id']}/").status_code == 204
    assert api_client.get(f"/api/v1/configs/{first['id']}/").status_code == 404
    assert Config.objects.get(id=first["id"]).deleted_at is not None  # soft delete
    assert create(api_client).status_code == 201
    resp = api_client.patch(f"/api/v1/configs/{other['id']}/", {"description": "new"}, format="json")
    assert resp.status_code == 200 and resp.json()["description"] == "new"
    assert [c["name"] for c in api_client.get("/api/v1/configs/").json()["results"]] == ["bot", "other"]


def test_another_projects_config_is_invisible(api_client, other_client):
    config = create(api_client).json()
    for method, path in [
        ("get", f"/api/v1/configs/{config['id']}/"),
        ("patch", f"/api/v1/configs/{config['id']}/"),
        ("delete", f"/api/v1/configs/{config['id']}/"),
        ("get", f"/api/v1/configs/{config['id']}/versions/"),
        ("post", f"/api/v1/configs/{config['id']}/versions/"),
        ("get", f"/api/v1/configs/{config['id']}/versions/1/"),
    ]:
        if method == "post":
            resp = other_client.post(path, {"blob": BLOBS["openai"]}, format="json")
        else:
            resp = getattr(other_client, method)(path)
        assert resp.status_code == 404, (method, path)
    assert other_client.get("/api/v1/configs/").json()["results"] == []


def test_put_and_bad_input_are_4xx(api_client):
    config = create(api_client).json()
    assert api_client.put(f"/api/v1/configs/{config['id']}/", {"name": "x"}, format="json").status_code == 405
    assert api_client.post("/api/v1/configs/", {"name": ""}, format="json").status_code == 400
    assert api_client.get("/api/v1/configs/abc/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_concurrent_versions_get_distinct_numbers(project):
    config = config_create(project=project, name="race", blob=BLOBS["openai"])
    numbers, errors = [], []

    def add() -> None:
        try:
            numbers.append(config_version_create(config=config, blob=BLOBS["anthropic"]).version)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == list(range(2, 10))
