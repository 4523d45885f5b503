import django_filters

from .models import Document


class DocumentFilter(django_filters.FilterSet):
    content_type = django_filters.CharFilter(max_length=255)
    source_document = django_filters.UUIDFilter(field_name="source_id")
    derived = django_filters.BooleanFilter(
        field_name="job", lookup_expr="isnull", exclude=True, label="Only documents produced by a transformation."
    )

    class Meta:
        model = Document
        fields = ["content_type", "source_document", "derived"]
