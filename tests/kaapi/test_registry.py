"""kaapi.registry: the registration both decorator registries (job functions, transformers) share."""

import pytest

from kaapi.registry import dotted_path, register


def test_the_same_entry_again_is_fine_and_another_under_a_taken_key_is_refused():
    entries: dict[str, tuple] = {}
    register(entries, "a.f", ("f", 1), what="thing 'a.f'")
    register(entries, "a.f", ("f", 1), what="thing 'a.f'")  # a module imported twice
    with pytest.raises(ValueError, match="thing 'a.f' is already registered"):
        register(entries, "a.f", ("g", 1), what="thing 'a.f'")
    assert entries == {"a.f": ("f", 1)}


def test_a_function_is_known_by_its_dotted_path():
    assert (
        dotted_path(test_a_function_is_known_by_its_dotted_path)
        == f"{__name__}.{test_a_function_is_known_by_its_dotted_path.__qualname__}"
    )
