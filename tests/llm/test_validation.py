import pytest
from django.core.exceptions import ValidationError

from llm.validation import validate_blob
from tests.llm.conftest import BLOBS


def errors_of(blob) -> dict:
    with pytest.raises(ValidationError) as info:
        validate_blob(blob)
    return info.value.message_dict


@pytest.mark.parametrize("provider", sorted(BLOBS))
def test_valid_blobs_pass_unchanged(provider):
    assert validate_blob(BLOBS[provider]) == BLOBS[provider]


def test_unknown_param_is_named():
    errors = errors_of({"completion": {"provider": "openai", "params": {"model": "m", "temprature": 1}}})
    assert list(errors) == ["completion.params.temprature"]
    assert "unknown parameter for provider openai" in errors["completion.params.temprature"][0]


@pytest.mark.parametrize(
    ("provider", "param", "value", "message"),
    [
        ("openai", "temperature", 2.5, "must be <= 2"),
        ("openai", "top_p", -0.1, "must be >= 0"),
        ("openai", "max_output_tokens", 0, "must be >= 16"),
        ("openai", "temperature", "hot", "must be a number"),
        ("openai", "temperature", True, "must be a number"),
        ("openai-chat", "frequency_penalty", 3, "must be <= 2"),
        ("openai-chat", "reasoning_effort", "extreme", "must be one of"),
        ("anthropic", "temperature", 1.5, "must be <= 1"),
        ("anthropic", "max_tokens", 1.5, "must be an integer"),
        ("anthropic", "top_k", -1, "must be >= 0"),
    ],
)
def test_out_of_range_or_mistyped_params_are_named(provider, param, value, message):
    errors = errors_of({"completion": {"provider": provider, "params": {"model": "m", param: value}}})
    assert list(errors) == [f"completion.params.{param}"]
    assert message in errors[f"completion.params.{param}"][0]


def test_model_is_required_and_not_blank():
    assert (
        "required" in errors_of({"completion": {"provider": "anthropic", "params": {}}})["completion.params.model"][0]
    )
    blank = errors_of({"completion": {"provider": "openai", "params": {"model": "  "}}})
    assert "must not be empty" in blank["completion.params.model"][0]


def test_provider_and_structure_are_checked():
    assert (
        "must be one of openai, openai-chat, anthropic"
        in errors_of({"completion": {"provider": "mistral", "params": {"model": "m"}}})["completion.provider"][0]
    )
    assert "completion" in errors_of({})
    assert "blob" in errors_of(["not", "an", "object"])
    errors = errors_of({"completion": {"provider": "openai", "params": {"model": "m"}, "extra": 1}, "other": 2})
    assert set(errors) == {"completion.extra", "other"}
    assert "completion.params" in errors_of({"completion": {"provider": "openai"}})


def test_every_bad_field_is_reported_at_once():
    errors = errors_of({"completion": {"provider": "openai", "params": {"temperature": 9, "foo": 1}}})
    assert set(errors) == {"completion.params.model", "completion.params.temperature", "completion.params.foo"}


def test_documented_structured_params_are_accepted():
    blob = {
        "completion": {
            "provider": "openai-chat",
            "params": {"model": "m", "stop": "\n\nUser:", "seed": 7, "response_format": {"type": "json_object"}},
        }
    }
    assert validate_blob(blob) == blob
    blob = {"completion": {"provider": "openai", "params": {"model": "m", "reasoning": {"effort": "low"}}}}
    assert validate_blob(blob) == blob
