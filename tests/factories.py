"""Test data, in one place: factory_boy factories for the rows tests write directly, and the helpers tests call.

``make_job`` creates a job the way the application does (the jobs service, published on commit); ``job_row`` and
the factories write rows directly and publish nothing; ``set_status`` puts a job in a state for a test.
"""

from __future__ import annotations

import factory
from django.db import transaction

from jobs import services
from jobs.functions import ECHO_PATH
from jobs.models import Job, JobStatus, WebhookDelivery, WebhookEvent
from tenancy.models import Organization, Project


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Organization {n}")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project
        django_get_or_create = ("organization", "name")

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Project {n}")


class JobFactory(factory.django.DjangoModelFactory):
    """A job row written directly, nothing published: a PENDING echo job on high_priority."""

    class Meta:
        model = Job

    project = factory.SubFactory(ProjectFactory)
    job_type = "ECHO"
    function_path = ECHO_PATH
    queue = "high_priority"
    priority = 9


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    """A delivery of a finished job's ``job.succeeded`` webhook to its callback URL."""

    class Meta:
        model = WebhookDelivery

    job = factory.SubFactory(JobFactory, status=JobStatus.SUCCESS, callback_url="https://hooks.example.com/k")
    url = factory.SelfAttribute("job.callback_url")
    event = WebhookEvent.SUCCEEDED
    payload = factory.Dict({})


def make_job(project, *, function_path: str = ECHO_PATH, priority: str = "high", **params) -> Job:
    """A PENDING job created the way the services create one (published on commit)."""
    with transaction.atomic():
        return services.job_create(project=project, function_path=function_path, priority=priority, params=params)


def set_status(job: Job, status: str, **fields) -> Job:
    """Put a job in a state for a test (tests may bypass the services; the application may not)."""
    Job.objects.filter(id=job.id).update(status=status, **fields)
    job.refresh_from_db()
    return job


def job_row(project, **fields) -> Job:
    """A job row written directly, nothing published: an ECHO job on high_priority unless ``fields`` say else."""
    return JobFactory(project=project, **fields)
