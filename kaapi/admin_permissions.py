"""Who may run an admin action that changes state.

Jobs, webhook deliveries and documents are read-only in admin (their ``has_change_permission`` is False, so the
change form has no Save button), yet their actions cancel, retry, redeliver or start jobs. Those actions ask for
the model's *change* permission as granted to the user, not for the view permission that reading the page needs.
"""

from __future__ import annotations

from django.contrib.auth import get_permission_codename
from django.http import HttpRequest


class OperateActionsMixin:
    """``@admin.action(permissions=["operate"])``: the user holds ``<app>.change_<model>`` (superusers do)."""

    def has_operate_permission(self, request: HttpRequest) -> bool:
        opts = self.opts  # type: ignore[attr-defined]
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")
