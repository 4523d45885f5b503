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


def test_the_converter_dies_with_the_process_that_started_it(tmp_path):
    """A pool process killed mid-conversion (hard time limit, OOM) leaves no converter behind."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, wait_until

    pid_file = tmp_path / "converter.pid"
    started = tmp_path / "conversion.started"
    code = (
        "import django; django.setup()\n"
        "from doctransform.converter import ConverterProcess\n"
        "import tests.doctransform.misbehaving_transformers as m\n"
        "c = ConverterProcess(max_memory_mb=0, max_conversions=10)\n"
        "c.start()\n"
        f"open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
        f"c.convert(function_path=m.__name__ + '.hang_once_started', data={str(started).encode()!r}, hints={{}},"
        " timeout=3600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ})
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=60, message="the converter to start")
        converter_pid = int(pid_file.read_text())
        wait_until(started.exists, timeout=30, message="the hanging conversion to begin")
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)

        def gone() -> bool:
            try:
                with open(f"/proc/{converter_pid}/status") as fh:
                    return "State:\tZ" in fh.read()  # a zombie waiting for init to reap it is gone too
            except FileNotFoundError:
                return True

        wait_until(gone, timeout=10, message="the orphaned converter to die")
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.parametrize("kind", ["docx", "pptx", "xlsx"])
def test_a_password_protected_office_file_is_refused_clearly(kind):
    from doctransform.exceptions import DocumentEncrypted
    from doctransform.transformers import load_function

    from .files import SUPPORTED

    encrypted = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "EncryptedPackage".encode("utf-16-le")
    transformer = get_transformer(source_type=SUPPORTED[kind][2])
    with pytest.raises(DocumentEncrypted, match="password-protected"):
        load_function(transformer.function_path)(encrypted, filename=f"secret.{kind}")
