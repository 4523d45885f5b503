from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from jobs import dashboard
from kaapi import schema  # noqa: F401  (OpenAPI extensions)
from kaapi.health import HealthzView, ReadyzView
from kaapi.metrics import metrics_view
from kaapi.throttling import admin_login

urlpatterns = [
    path("admin/login/", admin_login, name="admin-login"),  # throttled; the rest of admin as it is
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard_view), name="admin-dashboard"),
    path("admin/dashboard/data/", admin.site.admin_view(dashboard.dashboard_data_view), name="admin-dashboard-data"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tenancy.urls")),
    path("api/v1/", include("jobs.urls")),
    path("api/v1/", include("llm.urls")),
    path("api/v1/", include("doctransform.urls")),
    # Operations: no API key (see docs/operations.md)
    path("healthz", HealthzView.as_view(), name="healthz"),
    path("readyz", ReadyzView.as_view(), name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # the split view: the page loads its set-up script from a URL too (no inline script: a strict CSP allows it)
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="api-schema", template_name="kaapi/redoc.html"),
        name="api-redoc",
    ),
]

# Unknown URLs and unhandled errors answer JSON like the rest of the API, not Django's HTML pages.
handler400 = "kaapi.api.bad_request"
handler404 = "kaapi.api.not_found"
handler500 = "kaapi.api.server_error"
