from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse
from django.utils import timezone

from tenancy.models import Organization, Project

from . import services, usage
from .models import LIMIT_FIELDS, BudgetAlert, Config, ConfigVersion, ModelPrice, ProjectUsage, ProviderCredential
from .validation import validate_blob


class ConfigVersionInline(admin.TabularInline):
    model = ConfigVersion
    fields = ("version", "provider", "commit_message", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Config)
class ConfigAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "project", "created_at", "updated_at", "deleted_at")
    list_filter = ("deleted_at", "created_at")
    search_fields = ("name", "description", "project__name")
    list_select_related = ("project__organization",)
    readonly_fields = ("created_at", "updated_at", "deleted_at")
    inlines = (ConfigVersionInline,)
    actions = ("soft_delete",)

    @admin.action(description="Delete selected configs (soft delete)", permissions=["change"])
    def soft_delete(self, request, queryset):
        count = 0
        for config in queryset.filter(deleted_at__isnull=True):
            services.config_delete(config=config)
            count += 1
        self.message_user(request, f"Deleted {count} config(s).", messages.SUCCESS)


class ConfigVersionForm(forms.ModelForm):
    class Meta:
        model = ConfigVersion
        fields = ("config", "blob", "commit_message")

    def clean_blob(self):
        try:
            return validate_blob(self.cleaned_data["blob"])
        except ValidationError as exc:
            raise ValidationError([f"{field}: {m}" for field, msgs in exc.message_dict.items() for m in msgs]) from None


@admin.register(ConfigVersion)
class ConfigVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: they can be added (the next number) and viewed, never changed."""

    form = ConfigVersionForm
    list_display = ("config", "version", "provider", "commit_message", "created_at")
    list_filter = ("created_at",)
    search_fields = ("config__name", "commit_message")
    list_select_related = ("config__project",)
    raw_id_fields = ("config",)

    def get_readonly_fields(self, request, obj=None):
        return ("config", "version", "blob", "commit_message", "created_at") if obj else ()

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        created = services.config_version_create(
            config=form.cleaned_data["config"],
            blob=form.cleaned_data["blob"],
            commit_message=form.cleaned_data["commit_message"],
        )
        obj.pk, obj.version, obj.created_at = created.pk, created.version, created.created_at


class ProviderCredentialForm(forms.ModelForm):
    api_key = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="Stored encrypted and never shown again. Leave empty to keep the current key.",
    )
    base_url = forms.URLField(required=False, assume_scheme="https", max_length=500)

    class Meta:
        model = ProviderCredential
        fields = (
            "project",
            "provider",
            "api_key",
            "base_url",
            "organization",
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrent_calls",
        )

    def clean(self):
        cleaned = super().clean() or {}
        if not self.instance.pk and not cleaned.get("api_key"):
            self.add_error("api_key", "required")
        try:
            services.validate_credential_headers(
                api_key=cleaned.get("api_key") or None, organization=cleaned.get("organization") or ""
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field, messages)
        if cleaned.get("base_url"):
            try:
                services.validate_base_url(cleaned["base_url"])
            except ValidationError as exc:
                self.add_error("base_url", exc.message_dict["base_url"])
        return cleaned


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin):
    form = ProviderCredentialForm
    list_display = (
        "project",
        "provider",
        "masked_api_key",
        "base_url",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent_calls",
        "updated_at",
    )
    list_filter = ("provider",)
    search_fields = ("project__name", "project__organization__name", "base_url")
    list_select_related = ("project__organization",)
    readonly_fields = ("masked_api_key", "created_at", "updated_at")

    def save_model(self, request, obj, form, change) -> None:
        data = form.cleaned_data
        if data.get("api_key"):
            saved = services.credential_set(
                project=data["project"],
                provider=data["provider"],
                api_key=data["api_key"],
                base_url=data.get("base_url", ""),
                organization=data.get("organization", ""),
                **{name: data.get(name) for name in LIMIT_FIELDS},
            )
            obj.pk = saved.pk
        else:
            obj.updated_at = timezone.now()
            obj.save(update_fields=["project", "provider", "base_url", "organization", *LIMIT_FIELDS, "updated_at"])


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """The price table: list prices per million tokens, with where and when they were read (check them there)."""

    list_display = (
        "provider",
        "model",
        "aliases",
        "input_per_million",
        "cached_input_per_million",
        "output_per_million",
        "price_date",
        "source_url",
    )
    list_filter = ("provider",)
    search_fields = ("model", "aliases")
    readonly_fields = ("updated_at",)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    """The budget.threshold alerts sent, one per budget and month."""

    list_display = ("month", "project", "organization", "budget", "spend", "created_at")
    list_filter = ("month",)
    list_select_related = ("project__organization", "organization")
    readonly_fields = ("project", "organization", "month", "budget", "spend", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class UsageFilterForm(forms.Form):
    organization = forms.ModelChoiceField(queryset=Organization.objects.order_by("name"), required=False)
    project = forms.ModelChoiceField(
        queryset=Project.objects.select_related("organization").order_by("organization__name", "name"),
        required=False,
        help_text="A project of the organization (or any, without one).",
    )
    start = forms.DateField(label="from", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="to", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    group_by = forms.ChoiceField(choices=[(g, g) for g in usage.GROUP_BY], initial="day", required=False)

    def clean(self):
        data = super().clean() or {}
        today = timezone.now().date()
        data["end"] = data.get("end") or today
        data["start"] = data.get("start") or data["end"].replace(day=1)
        if data["start"] > data["end"]:
            raise ValidationError("'from' must not be after 'to'")
        if (data["end"] - data["start"]).days >= settings.LLM_USAGE_MAX_DAYS:
            raise ValidationError(f"the period may be at most {settings.LLM_USAGE_MAX_DAYS} days")
        data["group_by"] = data.get("group_by") or "day"
        return data


@admin.register(ProjectUsage)
class ProjectUsageAdmin(admin.ModelAdmin):
    """LLM calls, failures, tokens and cost per organization or project, with a chart of the cost per day: the
    report of ``GET /api/v1/usage/`` (llm.usage) for operators."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = UsageFilterForm(request.GET)  # every field is optional: no query is this month, by day, every project
        report = per_day = None
        if form.is_valid():
            data = form.cleaned_data
            project_ids = None
            if data.get("project"):
                project_ids = [data["project"].pk]
            elif data.get("organization"):
                project_ids = list(data["organization"].projects.values_list("pk", flat=True))
            start, end = usage.day_range(data["start"], data["end"])
            report = usage.usage_report(project_ids=project_ids, start=start, end=end, group_by=data["group_by"])
            per_day = usage.usage_report(project_ids=project_ids, start=start, end=end, group_by="day")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "LLM usage",
            "form": form,
            "report": report,
            "chart": None
            if per_day is None
            else {"labels": [g["key"] for g in per_day["groups"]], "cost": [g["cost"] for g in per_day["groups"]]},
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/llm/usage.html", context)
