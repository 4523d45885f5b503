from django.urls import re_path
from rest_framework.routers import SimpleRouter

from .views import ConfigViewSet, CredentialViewSet, LlmCallView

router = SimpleRouter()
router.register("configs", ConfigViewSet, basename="llm-config")
router.register("credentials", CredentialViewSet, basename="llm-credential")
urlpatterns = [
    re_path(r"^llm/call/?$", LlmCallView.as_view(), name="llm-call"),
    *router.urls,
]
