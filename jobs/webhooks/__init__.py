"""Signed webhook delivery (Standard Webhooks) behind an SSRF guard."""

from .services import (
    validate_callback_url,
    webhook_attempt,
    webhook_deliveries_publish_due,
    webhook_enqueue_for_job,
    webhook_enqueue_for_project,
    webhook_payload,
    webhook_redeliver,
    webhook_secret_get,
    webhook_secret_rotate,
)

__all__ = [
    "validate_callback_url",
    "webhook_attempt",
    "webhook_deliveries_publish_due",
    "webhook_enqueue_for_job",
    "webhook_enqueue_for_project",
    "webhook_payload",
    "webhook_redeliver",
    "webhook_secret_get",
    "webhook_secret_rotate",
]
