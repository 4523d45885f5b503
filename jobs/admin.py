import json
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import ClassVar

from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask
from django_celery_results import admin as results_admin
from django_celery_results.models import TaskResult

from kaapi.admin_permissions import OperateActionsMixin
from kaapi.celery import HIGH_PRIORITY_QUEUE, LOW_PRIORITY_QUEUE

from . import selectors, services, webhooks
from .exceptions import JobStateError
from .models import FINISHED_STATUSES, Job, WebhookDelivery, WebhookSecret
from .registry import get_job_function, registered_paths

logger = logging.getLogger(__name__)


class ExactSearchMixin:
    """Search by exact identifiers, each served by its index.

    Django's ``=`` search fields compare ``UPPER(column::text)`` with the term, which no index serves: on a large
    table every search read the whole table, several times (the count, the rows, the date bounds). Here each of
    ``search_fields`` is compared exactly, as its own type (a term that is not a UUID is not compared with UUIDs).
    """

    search_fields: ClassVar[Sequence[str]]

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
        return queryset.filter(**{str(self.parameter_name): self.value()}) if self.value() else queryset


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


# --- How a job reads in admin ---------------------------------------------------------------------
def format_time(value) -> str:
    """A timestamp to the second, in the admin's time zone."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def format_duration(delta: timedelta) -> str:
    seconds = max(0.0, delta.total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def pretty_json(value, *, open_: bool = True) -> str:
    """JSON indented, in a block that folds (no script needed)."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    summary = f"{len(text.splitlines())} lines"
    return format_html(
        '<details class="job-json"{}><summary>{}</summary><pre>{}</pre></details>',
        " open" if open_ else "",
        summary,
        text,
    )


def admin_change_link(obj, text: str | None = None) -> str:
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(obj))


def job_link(job_id, text: str | None = None) -> str:
    """A link to the job's admin page, showing the short id (the full one on hover)."""
    if job_id is None:
        return "—"
    url = reverse("admin:jobs_job_change", args=[job_id])
    return format_html('<a href="{}" title="{}">{}</a>', url, job_id, text or str(job_id)[:8])


_HEX_PREFIX = re.compile(r"[0-9a-f]{1,32}")


@admin.register(Job)
class JobAdmin(OperateActionsMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = (
        "short_id",
        "job_type",
        "status_with_reason",
        "project",
        "queue",
        "priority",
        "attempts",
        "progress_percent",
        "run_after",
        "created",
        "waited",
        "ran",
        "finished",
        "error_summary",
    )
    # No date_hierarchy: it reads the whole table for its date bounds on every page (created_at's list filter
    # offers today, the past 7 days, this month, this year).
    list_filter = ("status", "waiting_reason", JobTypeFilter, QueueFilter, "project", "created_at")
    search_fields = ("id", "task_id", "trace_id")
    search_help_text = "A job id or its first characters, or an exact Celery task id or trace id."
    list_select_related = ("project__organization",)
    actions = ("cancel_jobs", "retry_jobs")
    inlines = (WebhookDeliveryInline,)
    show_full_result_count = False
    change_form_template = "admin/jobs/job/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "job_type",
                    "function_path",
                    "project",
                    "status_with_reason",
                    "queue",
                    "priority",
                    "attempts",
                    "worker_lost_count",
                    ("progress_percent", "progress_message"),
                    "trace_id",
                    "callback_url",
                )
            },
        ),
        ("Times", {"fields": ("created", "dispatched", "started", "finished", "waited", "ran", "updated")}),
        ("Parameters and outcome", {"fields": ("params_json", "result_json", "error_text")}),
        ("Related", {"fields": ("task_result", "related")}),
    )
    readonly_fields = [
        *(f.name for f in Job._meta.fields),
        "status_with_reason",
        "created",
        "dispatched",
        "started",
        "finished",
        "updated",
        "waited",
        "ran",
        "params_json",
        "result_json",
        "error_text",
        "task_result",
        "related",
    ]

    class Media:
        js = ("jobs/admin.js",)
        css = {"all": ("jobs/admin.css",)}

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # jobs leave by retention (jobs_cron_retention), not by hand

    # --- Columns ---
    @admin.display(description="id", ordering="id")
    def short_id(self, job: Job) -> str:
        return format_html(
            '<span class="job-id" title="{}">{}</span> '
            '<button type="button" class="copy-id" data-copy="{}" title="Copy the full id">⧉</button>',
            job.id,
            str(job.id)[:8],
            job.id,
        )

    @admin.display(description="status", ordering="status")
    def status_with_reason(self, job: Job) -> str:
        retry_at = selectors.job_retry_at(job=job)
        if retry_at is not None:
            return format_html(
                '<span class="job-retrying" title="{}">retrying at {}</span>',
                job.error[:500],
                timezone.localtime(retry_at).strftime("%H:%M:%S"),
            )
        if job.waiting_reason:
            return f"{job.get_status_display()} ({job.waiting_reason})"
        return job.get_status_display()

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return format_time(job.created_at)

    @admin.display(description="dispatched", ordering="dispatched_at")
    def dispatched(self, job: Job) -> str:
        return format_time(job.dispatched_at)

    @admin.display(description="started", ordering="started_at")
    def started(self, job: Job) -> str:
        return format_time(job.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, job: Job) -> str:
        return format_time(job.finished_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, job: Job) -> str:
        return format_time(job.updated_at)

    @admin.display(description="waited")
    def waited(self, job: Job) -> str:
        """From creation to the start of the last attempt; still counting while it waits."""
        if job.started_at:
            return format_duration(job.started_at - job.created_at)
        if job.status in FINISHED_STATUSES:
            return "—"
        return format_duration(timezone.now() - job.created_at) + " …"

    @admin.display(description="ran")
    def ran(self, job: Job) -> str:
        """The last attempt, from its start to the job's end; still counting while it runs."""
        if not job.started_at:
            return "—"
        if job.finished_at:
            return format_duration(job.finished_at - job.started_at)
        return format_duration(timezone.now() - job.started_at) + " …"

    @admin.display(description="error")
    def error_summary(self, job: Job) -> str:
        if not job.error:
            return ""
        first_line = job.error.strip().splitlines()[0] if job.error.strip() else ""
        short = first_line if len(first_line) <= 80 else first_line[:79] + "…"
        return format_html('<span title="{}">{}</span>', job.error[:1000], short)

    # --- The job's page ---
    @admin.display(description="parameters")
    def params_json(self, job: Job) -> str:
        return pretty_json(job.params)

    @admin.display(description="result")
    def result_json(self, job: Job) -> str:
        return pretty_json(job.result)

    @admin.display(description="error")
    def error_text(self, job: Job) -> str:
        return format_html('<pre class="job-error">{}</pre>', job.error) if job.error else "—"

    @admin.display(description="task result")
    def task_result(self, job: Job) -> str:
        """Celery's record of the last attempt (with its traceback), found by the job's task id."""
        found = TaskResult.objects.filter(task_id=job.task_id).only("id", "status").first() if job.task_id else None
        if found is None:
            return f"none yet (task {job.task_id})" if job.task_id else "—"
        return admin_change_link(found, f"{found.status}: {job.task_id}")

    @admin.display(description="related")
    def related(self, job: Job) -> str:
        """Links to the rows of other models that point at this job (documents, webhook deliveries, ...), each
        model's admin list filtered to them: found through the model's relations, so jobs imports no other app."""
        links = []
        for relation in Job._meta.related_objects:
            model = relation.related_model
            if not relation.one_to_many or not self.admin_site.is_registered(model):
                continue
            count = model._default_manager.filter(**{relation.field.name: job.pk}).count()
            opts = model._meta
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            links.append(
                format_html(
                    '<a href="{}?{}__id__exact={}">{} ({})</a>',
                    url,
                    relation.field.name,
                    job.pk,
                    opts.verbose_name_plural,
                    count,
                )
            )
        return format_html_join(mark_safe("<br>"), "{}", ((link,) for link in links)) if links else "—"

    # --- Search: a prefix of the job id, served by the primary key's index ---
    def get_search_results(self, request, queryset, search_term):
        exact, _ = super().get_search_results(request, queryset, search_term)
        prefix = search_term.strip().lower().replace("-", "")
        if not _HEX_PREFIX.fullmatch(prefix) or len(prefix) == 32:
            return exact, False
        low, high = uuid.UUID(prefix.ljust(32, "0")), uuid.UUID(prefix.ljust(32, "f"))
        return exact | queryset.filter(id__gte=low, id__lte=high), False

    # --- Cancel and Retry: list actions, and buttons on a job's page ---
    def get_urls(self):
        def job_view(operation):
            return self.admin_site.admin_view(partial(self.operate_view, operation=operation))

        return [
            path("<path:object_id>/cancel/", job_view("cancel"), name="jobs_job_cancel"),
            path("<path:object_id>/retry/", job_view("retry"), name="jobs_job_retry"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_operate": self.has_operate_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def operate_view(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_operate_permission(request):
            raise PermissionDenied
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404("No such job.")
        if operation == "cancel":
            self._apply(request, [job], services.job_cancel, "Cancelled")
        else:
            self._apply(request, [job], services.job_retry, "Retried")
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))

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
        "job_id_link",
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
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ("redeliver",)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="job", ordering="job")
    def job_id_link(self, delivery: WebhookDelivery) -> str:
        return job_link(delivery.job_id)

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
    prefix = webhooks.services.SECRET_PREFIX if value.startswith(webhooks.services.SECRET_PREFIX) else ""
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


# --- Task results (django-celery-results' admin, with the job each belongs to) -----------------------
admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class TaskResultAdmin(results_admin.TaskResultAdmin):
    """A generic task's result names the job it ran ("execute_high_priority_task" says nothing) and links to it:
    the job is found by its task id (indexed), not from the task's kwargs."""

    list_display = ("task_id", "job_column", "task_name", "periodic_task_name", "date_done", "status", "worker")
    date_hierarchy = None  # it reads the whole table for its date bounds on every page
    fieldsets = ((None, {"fields": ("job_column",)}), *results_admin.TaskResultAdmin.fieldsets)

    def get_queryset(self, request):
        jobs = Job.objects.filter(task_id=OuterRef("task_id")).order_by()
        return (
            super()
            .get_queryset(request)
            .annotate(
                job_id=Subquery(jobs.values("id")[:1]),
                job_type=Subquery(jobs.values("job_type")[:1]),
            )
        )

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "job_column"]

    @admin.display(description="job")
    def job_column(self, result: TaskResult) -> str:
        if getattr(result, "job_id", None) is None:
            return "—"
        return job_link(result.job_id, f"{result.job_type} {str(result.job_id)[:8]}")
