"""API keys in admin."""

import pytest

from tenancy.models import APIKey, Project
from tenancy.services import api_key_create

pytestmark = pytest.mark.django_db


def test_an_api_keys_project_cannot_be_changed_after_creation(admin_client, project):
    key = api_key_create(project=project, name="ci").api_key
    other = Project.objects.create(organization=project.organization, name="other")
    page = admin_client.get(f"/admin/tenancy/apikey/{key.pk}/change/").content.decode()
    assert 'name="project"' not in page
    admin_client.post(f"/admin/tenancy/apikey/{key.pk}/change/", {"name": "renamed", "project": other.pk})
    key.refresh_from_db()
    assert (key.name, key.project_id) == ("renamed", project.pk)


def test_a_new_api_key_still_chooses_its_project(admin_client, project):
    assert 'name="project"' in admin_client.get("/admin/tenancy/apikey/add/").content.decode()
    admin_client.post("/admin/tenancy/apikey/add/", {"name": "new", "project": project.pk})
    assert APIKey.objects.get(name="new").project_id == project.pk
