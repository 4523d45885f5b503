from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import (
    ConfigViewSet,
    CredentialViewSet,
    LlmBatchView,
    LlmCallBatchView,
    LlmCallSlashView,
    LlmCallView,
    UsageView,
)

router = SimpleRouter()
router.register("configs", ConfigViewSet, basename="llm-config")
router.register("credentials", CredentialViewSet, basename="llm-credential")
urlpatterns = [
    path("llm/call", LlmCallView.as_view(), name="llm-call"),
    path("llm/call/", LlmCallSlashView.as_view()),
    path("llm/call/batch", LlmCallBatchView.as_view(), name="llm-call-batch"),
    path("llm/batches/<uuid:batch_id>/", LlmBatchView.as_view(), name="llm-batch"),
    path("usage/", UsageView.as_view(), name="llm-usage"),
    *router.urls,
]
