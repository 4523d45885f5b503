"""The webhook secret in admin: masked, revealed only on request by a user who may change it, and recorded."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User

from jobs.webhooks import webhook_secret_get

pytestmark = pytest.mark.django_db


def test_the_secret_is_masked_on_its_page_and_in_the_list(admin_client, project):
    secret = webhook_secret_get(project=project)
    for url in ("/admin/jobs/webhooksecret/", f"/admin/jobs/webhooksecret/{secret.pk}/change/"):
        page = admin_client.get(url).content.decode()
        assert secret.secret not in page
        assert secret.secret[-4:] in page


def test_revealing_the_secret_shows_it_and_records_who_did(admin_client, project):
    secret = webhook_secret_get(project=project)
    assert admin_client.get(f"/admin/jobs/webhooksecret/{secret.pk}/reveal/").status_code == 405
    page = admin_client.post(f"/admin/jobs/webhooksecret/{secret.pk}/reveal/").content.decode()
    assert secret.secret in page
    [entry] = LogEntry.objects.filter(object_id=str(secret.pk))
    assert entry.user.username == "admin" and "Revealed" in entry.get_change_message()


def test_a_user_who_may_only_view_cannot_reveal(client, project):
    secret = webhook_secret_get(project=project)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhooksecret"))
    client.force_login(viewer)
    page = client.get(f"/admin/jobs/webhooksecret/{secret.pk}/change/").content.decode()
    assert secret.secret not in page and "reveal-secret" not in page
    assert client.post(f"/admin/jobs/webhooksecret/{secret.pk}/reveal/").status_code == 403
    assert not LogEntry.objects.exists()
