"""Request rates: per API key for the API (submissions and reads counted apart), per address and user name for
the admin's login form. Counted in kaapi/ratelimit.py, so the limits hold across web processes and hosts."""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import BaseThrottle

from . import ratelimit

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class _APIKeyThrottle(BaseThrottle):
    """A fixed window per API key; over the rate, 429 with Retry-After (the seconds until the window ends)."""

    scope = ""
    setting = ""

    def applies(self, request) -> bool:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        rate = ratelimit.Rate.parse(getattr(settings, self.setting))
        api_key = request.auth
        if rate is None or api_key is None or not self.applies(request):
            return True
        try:
            hits, self._wait = ratelimit.hit(f"{self.scope}:{api_key.prefix}", window=rate.seconds)
        except Exception:  # the shared cache is down: serve rather than refuse every client
            logger.warning("API throttle: the shared cache is unreachable; request not counted", exc_info=True)
            return True
        return hits <= rate.count

    def wait(self) -> float:
        return math.ceil(self._wait)


class SubmitRateThrottle(_APIKeyThrottle):
    """Requests that change something (POST, PUT, PATCH, DELETE): job submissions above all."""

    scope = "submit"
    setting = "API_THROTTLE_SUBMIT_RATE"

    def applies(self, request) -> bool:
        return request.method not in SAFE_METHODS


class ReadRateThrottle(_APIKeyThrottle):
    """Reads (GET): polls of jobs, lists."""

    scope = "read"
    setting = "API_THROTTLE_READ_RATE"

    def applies(self, request) -> bool:
        return request.method in SAFE_METHODS


# --- Admin login ----------------------------------------------------------------------------------
def _login_key(request: HttpRequest) -> str:
    username = (request.POST.get("username") or "").strip().lower()[:150]
    return f"admin-login:{request.META.get('REMOTE_ADDR', '')}:{username}"


def admin_login(request: HttpRequest, extra_context=None) -> HttpResponse:
    """The admin's login view, refusing (429) an address and user name after ``ADMIN_LOGIN_MAX_FAILURES`` failed
    attempts within ``ADMIN_LOGIN_FAILURE_WINDOW`` seconds, before the password is even checked: guessing one
    user's password is slowed to that pace, and other users and addresses are not locked out."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    key, window = _login_key(request), settings.ADMIN_LOGIN_FAILURE_WINDOW
    try:
        failures, remaining = ratelimit.count(key, window=window)
    except Exception:
        logger.warning("admin login throttle: the shared cache is unreachable", exc_info=True)
        return admin.site.login(request, extra_context)
    if failures >= settings.ADMIN_LOGIN_MAX_FAILURES:
        response = HttpResponse(
            "Too many failed login attempts; try again later.", status=429, content_type="text/plain"
        )
        response["Retry-After"] = str(math.ceil(remaining))
        return response
    response = admin.site.login(request, extra_context)
    if request.user.is_authenticated:
        ratelimit.reset(key, window=window)
    else:
        ratelimit.hit(key, window=window)
    return response
