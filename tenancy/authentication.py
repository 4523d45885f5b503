"""DRF authentication by the ``X-API-KEY`` header."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from .models import Project
from .services import api_key_verify

HEADER = "X-API-KEY"


@dataclass(frozen=True)
class ProjectClient:
    """The authenticated caller: a project, acting through one of its API keys."""

    project: Project

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    @property
    def pk(self) -> int:
        return self.project.pk


class APIKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        raw = request.META.get("HTTP_X_API_KEY")
        if not raw:
            return None
        api_key = api_key_verify(raw=raw.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.is_revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        project = api_key.project
        if not project.organization.is_active:
            raise exceptions.PermissionDenied("The organization of this API key is inactive.")
        if not project.is_active:
            raise exceptions.PermissionDenied("The project of this API key is inactive.")
        return ProjectClient(project=project), api_key

    def authenticate_header(self, request) -> str:
        return HEADER


class HasProject(BasePermission):
    message = f"Authentication required: send your API key in the {HEADER} header."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, ProjectClient)


def request_project(request) -> Project:
    return request.user.project
