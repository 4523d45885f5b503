"""Generated hostile JSON bodies on every JSON endpoint: any text (NUL, unpaired surrogates, control characters),
numbers beyond a double or beyond 64 bits, nesting up to past the depth limit. No answer may be a 5xx.

Schemathesis generates from the schema, which describes valid bodies; these bodies are what the schema cannot
describe and a hostile client sends anyway."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm.services import config_create
from tests.factories import make_job
from tests.llm.conftest import BLOBS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("post", "/api/v1/jobs/echo/", ["params", "delay", "priority", "callback_url"]),
    ("post", "/api/v1/llm/call", ["config", "query", "callback_url", "request_metadata"]),
    ("post", "/api/v1/configs/", ["name", "description", "blob", "commit_message"]),
    ("patch", "/api/v1/configs/{config}/", ["name", "description"]),
    ("post", "/api/v1/configs/{config}/versions/", ["blob", "commit_message"]),
    ("put", "/api/v1/credentials/openai/", ["api_key", "base_url", "organization"]),
    ("post", "/api/v1/jobs/{job}/cancel/", ["terminate"]),
]

# Every code point, surrogates and NUL included (json.dumps writes those as \u escapes, as a client would).
hostile_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=20)
INFINITY = 1e309  # float("inf"), written "1e400" below: valid JSON that Python parses as infinity
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([INFINITY, -INFINITY]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, hostile_text)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)),
    max_leaves=12,
)


def _json(value) -> str:
    return json.dumps(value, allow_nan=True).replace("-Infinity", "-1e400").replace("Infinity", "1e400")


@st.composite
def raw_bodies(draw, fields) -> bytes:
    """A body of some of ``fields``; the first one's value is sometimes wrapped in lists to around the depth
    limit or far beyond it (written as text: a Python object that deep could not be serialized)."""
    body = draw(st.dictionaries(st.sampled_from(fields), values, max_size=len(fields)))
    depth = draw(st.sampled_from([0, 0, 0, 62, 63, 100_000]))
    members = [f"{_json(key)}: {_json(value)}" for key, value in body.items()]
    if depth and members:
        key, value = next(iter(body.items()))
        members[0] = f"{_json(key)}: {'[' * depth}{_json(value)}{']' * depth}"
    return ("{" + ", ".join(members) + "}").encode()


@pytest.mark.parametrize(("method", "path", "fields"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_hostile_json_bodies_never_500(api_client, project, method, path, fields):
    api_client.raise_request_exception = False
    path = path.format(
        config=config_create(project=project, name="fuzz", blob=BLOBS["openai"]).id, job=make_job(project).id
    )

    @given(raw=raw_bodies(fields))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(raw):
        resp = api_client.generic(method.upper(), path, raw, content_type="application/json")
        assert resp.status_code < 500, (raw[:300], resp.content[:300])

    check()
