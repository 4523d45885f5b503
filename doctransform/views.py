from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.serializers import submitted_response
from jobs.views import idempotent
from tenancy.authentication import request_project

from . import selectors, services
from .exceptions import (
    DocumentTooLarge,
    EmptyDocument,
    InvalidTransformOptions,
    PageLimitExceeded,
    StorageQuotaExceeded,
    UnsupportedTransformation,
)
from .filters import DocumentFilter
from .models import Document
from .serializers import (
    DocumentSerializer,
    DocumentSubmittedSerializer,
    DocumentUploadSerializer,
    SupportedTransformationSerializer,
)
from .transformers import supported_transformations

# Room for the multipart boundaries and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


class UnsupportedDocumentType(APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = "unsupported_document_type"


def _too_large() -> PayloadTooLarge:
    limit = settings.DOCUMENT_MAX_UPLOAD_BYTES
    return PayloadTooLarge(f"The file is larger than the upload limit of {limit} bytes.")


class UploadLimitHandler(FileUploadHandler):
    """Refuses an upload as soon as it passes the limit, instead of spooling all of it to disk first."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > settings.DOCUMENT_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES:
            raise _too_large()

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > settings.DOCUMENT_MAX_UPLOAD_BYTES:
            # The handlers after this one may hold a temporary file with the chunks so far; Django closes (and so
            # deletes) it only for StopUpload, and this 413 would leave it on disk until garbage collection.
            for handler in self.request.upload_handlers if self.request is not None else ():
                upload = getattr(handler, "file", None)
                if upload is not None and handler is not self:
                    upload.close()
            raise _too_large()
        return raw_data

    def file_complete(self, file_size):
        return None


class IgnoreAcceptHeader(BaseContentNegotiation):
    """A download answers with the file's own type whatever the Accept header says."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema_view(
    list=extend_schema(summary="The project's documents, newest first"),
    retrieve=extend_schema(summary="One document"),
    destroy=extend_schema(summary="Delete a document and its stored file"),
)
class DocumentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Documents of the caller's project."""

    serializer_class = DocumentSerializer
    filterset_class = DocumentFilter
    parser_classes = [MultiPartParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular building the schema: no caller
            return Document.objects.none()
        return selectors.document_list(project=request_project(self.request))

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if self.action == "create":  # before anything reads the body (the Idempotency-Key's fingerprint does)
            request._request.upload_handlers.insert(0, UploadLimitHandler(request._request))

    def get_object(self) -> Document:
        try:
            document_id = uuid.UUID(str(self.kwargs["pk"]))
        except ValueError:
            raise Http404("No document with this id in your project.") from None
        document = selectors.document_get(project=request_project(self.request), document_id=document_id)
        if document is None:
            raise Http404("No document with this id in your project.")
        return document

    @extend_schema(
        summary="Upload a document and transform it (202 with the job)",
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={
            202: DocumentSubmittedSerializer,
            400: OpenApiResponse(
                description="Empty file, missing field, unknown target format, transformer or OCR language, "
                "or a vision-llm config that is missing, unknown, invalid or without the project's credentials."
            ),
            413: OpenApiResponse(
                description="Larger than DOCUMENT_MAX_UPLOAD_BYTES, over the project's storage quota "
                "(the message gives the quota and the usage), or an image over DOCUMENT_MAX_PAGE_PIXELS "
                "or DOCUMENT_MAX_PAGES."
            ),
            415: OpenApiResponse(description="A document type that no transformer supports; lists the supported."),
        },
    )
    @idempotent
    def create(self, request: Request) -> Response:
        serializer = DocumentUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            document, job = services.document_upload(
                project=request_project(request),
                file=data["file"],
                filename=data["file"].name or "",
                target_format=data["target_format"],
                transformer=data["transformer"] or None,
                callback_url=data.get("callback_url", ""),
                run_after=data["run_after"],
                ocr_languages=data["ocr_languages"] or None,
                config_id=data.get("config_id"),
                config_version=data.get("config_version"),
                config_blob=data.get("config_blob"),
            )
        except EmptyDocument as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        except DocumentTooLarge:
            raise _too_large() from None
        except PageLimitExceeded as exc:
            message = str(exc)
            raise PayloadTooLarge(f"{message[:1].upper()}{message[1:]}.") from None
        except InvalidTransformOptions as exc:
            raise ValidationError(exc.errors) from None
        except StorageQuotaExceeded as exc:
            message = str(exc)
            raise PayloadTooLarge(f"{message[:1].upper()}{message[1:]}. Delete documents to make room.") from None
        except UnsupportedTransformation as exc:
            detail: dict[str, Any] = {"detail": f"{exc}.", "content_type": exc.content_type, "supported": exc.supported}
            if exc.unsupported_type:
                raise UnsupportedDocumentType(detail) from None
            raise ValidationError(detail) from None
        document_data = DocumentSerializer(document, context=self.get_serializer_context()).data
        return submitted_response(job, request, document=document_data)

    def destroy(self, request: Request, pk=None) -> Response:
        services.document_delete(document=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Download the document's file",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], content_negotiation_class=IgnoreAcceptHeader)
    def content(self, request: Request, pk=None) -> FileResponse:
        document = self.get_object()
        try:
            fh = services.document_storage().open(document.storage_key, "rb")
        except FileNotFoundError:
            raise Http404("The stored file of this document is missing.") from None
        content_type = document.content_type
        if document.job_id:  # produced by a transformation: always UTF-8
            content_type += "; charset=utf-8"
        response = FileResponse(fh, as_attachment=True, filename=document.filename, content_type=content_type)
        response["ETag"] = f'"{document.checksum_sha256}"'
        return response

    @extend_schema(summary="Supported transformations", responses=SupportedTransformationSerializer(many=True))
    @action(detail=False, methods=["get"], pagination_class=None, filterset_class=None)
    def transformers(self, request: Request) -> Response:
        return Response(supported_transformations())
