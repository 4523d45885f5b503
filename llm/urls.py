from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import ConfigViewSet, CredentialViewSet, LlmCallSlashView, LlmCallView, UsageView

router = SimpleRouter()
router.register("configs", ConfigViewSet, basename="llm-config")
router.register("credentials", CredentialViewSet, basename="llm-credential")
urlpatterns = [
    path("llm/call", LlmCallView.as_view(), name="llm-call"),
    path("llm/call/", LlmCallSlashView.as_view()),
    path("usage/", UsageView.as_view(), name="llm-usage"),
    *router.urls,
]
