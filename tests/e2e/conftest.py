"""End-to-end tests run against real processes: a `celery worker` on RabbitMQ and PostgreSQL, gunicorn, and the
local fake servers. Their fixtures are the apps' own (the fake LLM provider, the documents' media root and worker),
shared from the apps' conftest modules so unit and end-to-end tests build the same things."""

from tests.doctransform.conftest import _use_media_root, doc_worker, media_root  # noqa: F401
from tests.llm.conftest import fake_provider, model_prices, provider_credentials  # noqa: F401
