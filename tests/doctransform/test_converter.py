"""The converter process: a misbehaving conversion never takes the calling process down with it."""

import pytest

from doctransform.converter import ConverterProcess
from doctransform.exceptions import ConverterCrashed, DocumentUnreadable, TransformationTimeout
from doctransform.transformers import get_transformer

from . import misbehaving_transformers  # noqa: F401

TEXT = "text/plain"


def _path(name: str) -> str:
    return get_transformer(source_type=TEXT, name=name).function_path


@pytest.fixture
def converter():
    process = ConverterProcess(max_memory_mb=1024, max_conversions=3)
    yield process
    process.close()


def _convert(converter, name, timeout=30.0):
    return converter.convert(function_path=_path(name), data=b"x", hints={"charset": "utf-8"}, timeout=timeout)


def test_hang_crash_and_memory_blowup_end_in_clear_errors_and_the_next_conversion_works(converter):
    first_pid = _convert(converter, "test-pid")

    with pytest.raises(TransformationTimeout, match="longer than 0.5 s"):
        _convert(converter, "test-hang", timeout=0.5)
    assert not converter.alive()  # killed, not left running
    second_pid = _convert(converter, "test-pid")
    assert second_pid != first_pid

    with pytest.raises(ConverterCrashed, match="SIGSEGV"):
        _convert(converter, "test-crash")
    third_pid = _convert(converter, "test-pid")
    assert third_pid != second_pid

    with pytest.raises(DocumentUnreadable, match="more than 1024 MiB"):
        _convert(converter, "test-memory-hog")
    assert _convert(converter, "test-pid") == third_pid  # a MemoryError does not cost the process

    # replaced after max_conversions (3) conversions
    assert _convert(converter, "markitdown") == "x"
    assert _convert(converter, "test-pid") != third_pid
