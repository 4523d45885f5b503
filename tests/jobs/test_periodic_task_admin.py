"""django-celery-beat's periodic task admin, as jobs/admin.py adjusts it."""

import re

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

pytestmark = pytest.mark.django_db


def selected_option(page: str, name: str) -> str | None:
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert select, name
    chosen = re.search(r'<option value="([^"]*)"[^>]*selected', select.group(1))
    return chosen.group(1) if chosen else None


def test_a_registered_task_shows_in_task_registered_and_not_in_task_custom(admin_client):
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    periodic = PeriodicTask.objects.create(name="sweep", task="jobs_cron_retention", interval=every_minute)
    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{periodic.pk}/change/").content.decode()
    assert selected_option(page, "regtask") == "jobs_cron_retention"
    assert re.search(r'<input type="text" name="task"(?![^>]*value="jobs_)', page)


def test_an_unregistered_task_stays_in_task_custom(admin_client):
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    periodic = PeriodicTask.objects.create(name="old", task="gone.task", interval=every_minute)
    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{periodic.pk}/change/").content.decode()
    assert selected_option(page, "regtask") in (None, "")
    assert 'name="task" value="gone.task"' in page


def test_the_crontab_help_says_translation_only_for_a_chosen_crontab(admin_client):
    page = admin_client.get("/admin/django_celery_beat/periodictask/add/").content.decode()
    assert "Translation: ${additional}" not in page  # django-celery-beat's script: "Translation: undefined"
    assert "if (readable)" in page
