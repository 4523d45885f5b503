"""Usage reports and monthly budgets, read from the job's usage columns (jobs.models.Job: provider, model,
config_id, input_tokens, output_tokens, cost) through the ``job_usage`` index: never from the results' JSON.

Spend is the sum of ``Job.cost`` over the SUCCESS jobs finished in the calendar month (UTC). That column is written
only by the conditional UPDATE that marks a job SUCCESS (jobs.sql.mark_success), so a call is counted once,
whatever the concurrent workers and redelivered messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncMonth
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.webhooks import webhook_enqueue_for_project
from kaapi import metrics
from tenancy.models import Organization, Project

from .models import BudgetAlert

logger = logging.getLogger(__name__)

GROUP_BY = ("day", "month", "provider", "model", "config")
BUDGET_THRESHOLD_EVENT = "budget.threshold"


# --- Months ---------------------------------------------------------------------------------------------
def month_start(now: datetime) -> datetime:
    """The first instant of ``now``'s calendar month, in UTC."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


# --- Reads -----------------------------------------------------------------------------------------------
def _calls(*, project_ids: list[int] | None, start: datetime, end: datetime) -> QuerySet[Job]:
    """The finished AI calls of the projects (None: of all projects) in [start, end): the job_usage index's rows
    (its condition is repeated here, so the planner can use it)."""
    calls = Job.objects.filter(finished_at__gte=start, finished_at__lt=end, provider__gt="").order_by()
    return calls if project_ids is None else calls.filter(project_id__in=project_ids)


def spend_query(*, project_ids: list[int], now: datetime) -> QuerySet:
    return (
        _calls(project_ids=project_ids, start=month_start(now), end=next_month_start(now))
        .filter(status=JobStatus.SUCCESS)
        .values("project_id")
        .annotate(cost=Sum("cost"))
    )


def spend(*, project_ids: list[int], now: datetime | None = None) -> Decimal:
    """USD spent by the projects in ``now``'s calendar month (UTC)."""
    rows = spend_query(project_ids=project_ids, now=now or timezone.now())
    return sum((row["cost"] or Decimal(0) for row in rows), Decimal(0))


def _group_expression(group_by: str):
    return {
        "day": TruncDay("finished_at", tzinfo=UTC),
        "month": TruncMonth("finished_at", tzinfo=UTC),
        "provider": F("provider"),
        "model": F("model"),
        "config": F("config_id"),
    }[group_by]


def usage_report_query(*, project_ids: list[int] | None, start: datetime, end: datetime, group_by: str) -> QuerySet:
    """Calls, failures, tokens and cost per group (one row each), ordered by group."""
    return (
        _calls(project_ids=project_ids, start=start, end=end)
        .annotate(group=_group_expression(group_by))
        .values("group")
        .annotate(
            calls=Count("status"),
            failures=Count("status", filter=Q(status=JobStatus.FAILED)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
        )
        .order_by("group")
    )


def _key(group_by: str, value: Any) -> Any:
    if group_by == "day":
        return value.date().isoformat()
    if group_by == "month":
        return value.strftime("%Y-%m")
    return value


def usage_report(*, project_ids: list[int] | None, start: datetime, end: datetime, group_by: str) -> dict[str, Any]:
    """The report of ``GET /api/v1/usage/`` and of the admin page: groups and their total; costs as strings."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
    groups = []
    total = {"calls": 0, "failures": 0, "input_tokens": 0, "output_tokens": 0, "cost": Decimal(0)}
    for row in usage_report_query(project_ids=project_ids, start=start, end=end, group_by=group_by):
        group = {
            "key": _key(group_by, row["group"]),
            "calls": row["calls"],
            "failures": row["failures"],
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "cost": row["cost"] or Decimal(0),
        }
        for name in total:
            total[name] += group[name]
        groups.append({**group, "cost": str(group["cost"])})
    return {
        "from": start,
        "to": end,
        "group_by": group_by,
        "currency": "USD",
        "groups": groups,
        "total": {**total, "cost": str(total["cost"])},
    }


def day_range(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00, the day after last 00:00) in UTC: both days included."""
    return (
        datetime.combine(first, time.min, tzinfo=UTC),
        datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC),
    )


# --- Budgets ---------------------------------------------------------------------------------------------
class BudgetExceeded(Exception):
    """A monthly budget of the project or its organization is spent: new LLM calls are refused (402)."""


@dataclass(frozen=True)
class BudgetState:
    scope: str  # "project" or "organization"
    budget: Decimal
    spend: Decimal
    resets_at: datetime


def _budgets(project: Project) -> list[tuple[str, Decimal, list[int]]]:
    """(scope, budget, the projects it covers) of each budget set on the project or its organization."""
    found = []
    if project.monthly_budget is not None:
        found.append(("project", project.monthly_budget, [project.pk]))
    organization = project.organization
    if organization.monthly_budget is not None:
        project_ids = list(Project.objects.filter(organization=organization).values_list("pk", flat=True))
        found.append(("organization", organization.monthly_budget, project_ids))
    return found


def budget_states(*, project: Project, now: datetime | None = None) -> list[BudgetState]:
    """The budgets that apply to the project's LLM calls this month, with their spend."""
    now = now or timezone.now()
    return [
        BudgetState(scope=scope, budget=budget, spend=spend(project_ids=ids, now=now), resets_at=next_month_start(now))
        for scope, budget, ids in _budgets(project)
    ]


def budget_check(*, project: Project, now: datetime | None = None) -> None:
    """Before an LLM call is accepted: ``BudgetExceeded`` when a budget is spent; the soft-threshold alert of a
    budget past ``LLM_BUDGET_THRESHOLD_PERCENT`` (once per month). No query at all without a budget."""
    now = now or timezone.now()
    for state in budget_states(project=project, now=now):
        if state.spend >= state.budget * Decimal(settings.LLM_BUDGET_THRESHOLD_PERCENT) / 100:
            budget_threshold_reached(project=project, state=state, now=now)
        if state.spend >= state.budget:
            metrics.count_budget_refusal(state.scope)
            raise BudgetExceeded(
                f"the {state.scope}'s monthly LLM budget of {state.budget} USD is spent ({state.spend} USD this "
                f"month); it resets at {state.resets_at.isoformat()}"
            )


def budget_threshold_reached(*, project: Project, state: BudgetState, now: datetime) -> bool:
    """Record the month's alert of this budget and send it; False when it was sent already this month.

    The alert row's unique (budget, month) makes it once per month across concurrent submissions. The webhook goes
    to the project's ``budget_callback_url`` (for an organization's budget: that of the project whose call found
    the threshold passed), signed with the project's webhook secret.
    """
    month = month_start(now).date()
    scope = {"project": project} if state.scope == "project" else {"organization": project.organization}
    try:
        with transaction.atomic():
            BudgetAlert.objects.create(month=month, budget=state.budget, spend=state.spend, **scope)
            metrics.count_budget_threshold(state.scope)
            if project.budget_callback_url:
                webhook_enqueue_for_project(
                    project=project,
                    url=project.budget_callback_url,
                    event=BUDGET_THRESHOLD_EVENT,
                    payload=_threshold_payload(project=project, state=state, month=month),
                )
    except IntegrityError:
        return False
    logger.warning("%s budget threshold reached: %s of %s USD", state.scope, state.spend, state.budget)
    return True


def _threshold_payload(*, project: Project, state: BudgetState, month: date) -> dict[str, Any]:
    organization: Organization = project.organization
    return {
        "type": BUDGET_THRESHOLD_EVENT,
        "data": {
            "scope": state.scope,
            "organization": organization.name,
            "project": project.name,
            "project_id": project.pk,
            "month": month.strftime("%Y-%m"),
            "budget": str(state.budget),
            "spend": str(state.spend),
            "threshold_percent": settings.LLM_BUDGET_THRESHOLD_PERCENT,
            "resets_at": state.resets_at.isoformat(),
        },
    }
