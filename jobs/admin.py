import logging

from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import path
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from kaapi.admin_permissions import OperateActionsMixin
from kaapi.celery import HIGH_PRIORITY_QUEUE, LOW_PRIORITY_QUEUE

from . import services, webhooks
from .exceptions import JobStateError
from .models import Job, WebhookDelivery, WebhookSecret
from .registry import get_job_function, registered_paths

logger = logging.getLogger(__name__)


class ExactSearchMixin:
    """Search by exact identifiers, each served by its index.

    Django's ``=`` search fields compare ``UPPER(column::text)`` with the term, which no index serves: on a large
    table every search read the whole table, several times (the count, the rows, the date bounds). Here each of
    ``search_fields`` is compared exactly, as its own type (a term that is not a UUID is not compared with UUIDs).
    """

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q()
        for field_path in self.search_fields:
            field = get_fields_from_path(queryset.model, field_path)[-1]
            try:
                value = field.to_python(term)
            except ValidationError:
                continue
            condition |= Q(**{field_path: value})
        return (queryset.filter(condition) if condition else queryset.none()), False


class ChoicesFilter(admin.SimpleListFilter):
    """A list filter whose choices are known without asking the database (Django's default for a CharField
    without choices is a ``SELECT DISTINCT`` over the whole table on every page)."""

    def queryset(self, request, queryset):
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class JobTypeFilter(ChoicesFilter):
    title = "job type"
    parameter_name = "job_type"

    def lookups(self, request, model_admin):
        types = sorted({get_job_function(path).job_type for path in registered_paths()})
        return [(job_type, job_type) for job_type in types]


class QueueFilter(ChoicesFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [(queue, queue) for queue in (HIGH_PRIORITY_QUEUE, LOW_PRIORITY_QUEUE)]


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ("id", "event", "status", "attempts", "last_status_code", "last_error", "next_attempt_at", "delivered_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(OperateActionsMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "job_type",
        "status",
        "waiting_reason",
        "project",
        "queue",
        "priority",
        "attempts",
        "progress_percent",
        "created_at",
        "finished_at",
    )
    # No date_hierarchy: it reads the whole table for its date bounds on every page (created_at's list filter
    # offers today, the past 7 days, this month, this year).
    list_filter = ("status", "waiting_reason", JobTypeFilter, QueueFilter, "created_at")
    search_fields = ("id", "task_id", "trace_id")
    search_help_text = "An exact job id, Celery task id or trace id."
    list_select_related = ("project__organization",)
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ("cancel_jobs", "retry_jobs")
    inlines = (WebhookDeliveryInline,)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def _apply(self, request, queryset, operation, verb: str) -> None:
        done, refused = 0, []
        for job in queryset:
            try:
                with transaction.atomic():
                    operation(job=job)
                done += 1
            except JobStateError as exc:
                refused.append(f"{job.id}: {exc}")
        if done:
            self.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused[:20]), messages.WARNING)

    @admin.action(description="Cancel selected jobs", permissions=["operate"])
    def cancel_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_cancel, "Cancelled")

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["operate"])
    def retry_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_retry, "Retried")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(OperateActionsMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "event",
        "status",
        "job",
        "url",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    list_filter = ("status", "event", "created_at")
    search_fields = ("id", "job__id")
    search_help_text = "An exact delivery id (the webhook-id header) or job id."
    list_select_related = ("job",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ("redeliver",)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Redeliver selected webhooks (same webhook-id and body)", permissions=["operate"])
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset:
            with transaction.atomic():
                webhooks.webhook_redeliver(delivery=delivery)
            count += 1
        self.message_user(request, f"Queued {count} delivery(ies) again.", messages.SUCCESS)


def masked_secret(value: str) -> str:
    """``whsec_…`` and the last four characters: enough to tell two secrets apart, not to sign with."""
    prefix = "whsec_" if value.startswith("whsec_") else ""
    return f"{prefix}{'•' * 8}{value[-4:]}" if value else ""


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    list_display = ("project", "masked", "created_at", "rotated_at", "previous_valid_until")
    search_fields = ("project__name", "project__organization__name")
    list_select_related = ("project__organization",)
    fields = ("project", "masked", "previous_valid_until", "created_at", "rotated_at")
    actions = ("rotate",)
    change_form_template = "admin/jobs/webhooksecret/change_form.html"

    @admin.display(description="secret")
    def masked(self, obj: WebhookSecret) -> str:
        return masked_secret(obj.secret) if obj.pk else "(made when saved)"

    def get_readonly_fields(self, request, obj=None):
        readonly = ["masked", "previous_valid_until", "created_at", "rotated_at"]
        return readonly + ["project"] if obj else readonly

    def get_urls(self):
        reveal = path(
            "<path:object_id>/reveal/",
            self.admin_site.admin_view(self.reveal_view),
            name="jobs_webhooksecret_reveal",
        )
        return [reveal, *super().get_urls()]

    def reveal_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The secret in clear, for a POST by a user who may change secrets; recorded in the object's history."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        secret = self.get_object(request, unquote(object_id))
        if secret is None:
            raise Http404("No such webhook secret.")
        if not self.has_change_permission(request, secret):
            raise PermissionDenied
        self.log_change(request, secret, "Revealed the signing secret.")
        logger.warning("admin user %s revealed the webhook secret of project %s", request.user, secret.project_id)
        context = {**self.admin_site.each_context(request), "title": "Webhook secret", "secret": secret}
        return TemplateResponse(request, "admin/jobs/webhooksecret/reveal.html", context)

    def save_model(self, request, obj, form, change):
        if change:
            return
        secret = webhooks.webhook_secret_get(project=obj.project)
        obj.pk = secret.pk
        obj.secret = secret.secret

    @admin.action(
        description="Rotate selected secrets (the previous one keeps signing for the grace period)",
        permissions=["change"],
    )
    def rotate(self, request, queryset):
        for secret in queryset.select_related("project"):
            webhooks.webhook_secret_rotate(project=secret.project)
        self.message_user(request, f"Rotated {queryset.count()} secret(s).", messages.SUCCESS)


# --- Periodic tasks (django-celery-beat's admin, two fixes) --------------------------------------
class PeriodicTaskForm(beat_admin.PeriodicTaskForm):
    """The task's name in "Task (registered)" when it is a registered task (django-celery-beat leaves that field
    empty and shows the name in "Task (custom)", as if it were not registered)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        task = self.instance.task if self.instance.pk else ""
        if task and task in dict(self.fields["regtask"].widget.choices):
            self.initial["regtask"] = task
            self.initial["task"] = ""


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    form = PeriodicTaskForm
    change_form_template = "admin/jobs/periodictask_change_form.html"
