"""Periodic document maintenance (``*_cron_*``: the cron queue), scheduled among kaapi's default schedules."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="doctransform_cron_retention")
def doctransform_cron_retention(batch_size: int | None = None, max_batches: int | None = None) -> int:
    return services.documents_delete_expired(batch_size=batch_size, max_batches=max_batches)
