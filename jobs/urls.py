from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import JobViewSet
from .webhooks.api import JobWebhookListView, WebhookSecretRotateView, WebhookSecretView

router = SimpleRouter(use_regex_path=False)
router.register("jobs", JobViewSet, basename="job")
urlpatterns = [
    path("jobs/<uuid:pk>/webhooks/", JobWebhookListView.as_view(), name="job-webhooks"),
    path("webhooks/secret/", WebhookSecretView.as_view(), name="webhook-secret"),
    path("webhooks/secret/rotate/", WebhookSecretRotateView.as_view(), name="webhook-secret-rotate"),
    *router.urls,
]
