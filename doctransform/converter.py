"""Run conversions in a separate, long-lived converter process, with a time limit per conversion.

Each worker process (each thread, for a threads pool) keeps one converter process: it imports markitdown
once (~1 s) and then serves conversions at the cost of a socket round trip. When a conversion takes longer
than its limit, or the converter crashes (a segfault in a parser, the memory cap, the OOM killer), the
converter is killed and the conversion fails with a clear error; the worker process itself never hangs or
dies, and the next conversion starts a fresh converter. The converter is also replaced after
``DOCUMENT_TRANSFORM_MAX_CONVERSIONS`` conversions, and it dies with its worker (PR_SET_PDEATHSIG and EOF).

The converter process parses what clients upload, so it gets neither the worker's secrets nor its environment:
only ``DOCUMENT_CONVERTER_ENVIRONMENT`` (locale, paths). It refuses an output over
``DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES`` itself, before sending it.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from django.conf import settings

from .exceptions import (
    ConverterCrashed,
    DocumentEncrypted,
    DocumentUnreadable,
    MarkdownTooLarge,
    PageLimitExceeded,
    TransformationFailed,
    TransformationTimeout,
)
from .transformers import Converted, Transformer

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
_ERRORS = {
    cls.__name__: cls
    for cls in (DocumentEncrypted, DocumentUnreadable, MarkdownTooLarge, PageLimitExceeded, TransformationFailed)
}
_PR_SET_PDEATHSIG = 1
try:  # resolved here, not between fork and exec, where loading a library is not safe
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the converter still exits on EOF once its conversion is done
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ConverterProcess:
    """One converter process and the socket to it."""

    def __init__(self, *, max_memory_mb: int, max_conversions: int, startup_timeout: float = STARTUP_TIMEOUT):
        self.max_memory_mb = max_memory_mb
        self.max_conversions = max_conversions
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.conversions = 0
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "doctransform.converter_server",
                    str(child_sock.fileno()),
                    str(self.max_memory_mb),
                ],
                pass_fds=(child_sock.fileno(),),
                cwd=str(settings.BASE_DIR),
                stdin=subprocess.DEVNULL,
                env=settings.DOCUMENT_CONVERTER_ENVIRONMENT,
                preexec_fn=_die_with_parent,
            )
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self.conversions = 0
        if not self._conn.poll(self.startup_timeout):
            self.close()
            raise ConverterCrashed(f"the converter process did not start within {self.startup_timeout:g} s")
        try:
            self._conn.recv()
        except (EOFError, OSError):
            raise ConverterCrashed(f"the converter process failed to start ({self._exit_description()})") from None
        logger.info("converter process %s started", self.process.pid)

    def convert(
        self, *, function_path: str, data: bytes, hints: dict[str, Any], timeout: float, max_output_bytes: int = 0
    ) -> str:
        """The Markdown of one conversion (see ``run``)."""
        return self.run(
            function_path=function_path, data=data, hints=hints, timeout=timeout, max_output_bytes=max_output_bytes
        ).markdown

    def run(
        self,
        *,
        function_path: str,
        data: bytes,
        hints: dict[str, Any],
        timeout: float,
        max_output_bytes: int = 0,
        options: dict[str, Any] | None = None,
        on_page: Callable[[int, int], None] | None = None,
    ) -> Converted:
        """Run one conversion; kill the converter if it does not answer within ``timeout`` seconds.

        ``MarkdownTooLarge`` when the output passes ``max_output_bytes`` (0: no cap). ``options`` reach the
        conversion function (``transformers.conversion_options``); ``on_page(done, total)`` is called as pages are
        done, within the same ``timeout``.
        """
        if not self.alive() or self.conversions >= self.max_conversions:
            self.close()
            self.start()
        self.conversions += 1
        assert self._conn is not None  # start() opened it
        answered = False
        deadline = time.monotonic() + timeout
        try:
            try:
                self._conn.send(("convert", function_path, data, hints, max_output_bytes, options))
            except OSError:
                raise ConverterCrashed(f"the converter process died ({self._exit_description()})") from None
            while True:
                if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                    raise TransformationTimeout(f"the conversion took longer than {timeout:g} s and was stopped")
                try:
                    reply = self._conn.recv()
                except (EOFError, OSError):
                    raise ConverterCrashed(
                        f"the converter process crashed while converting this document ({self._exit_description()})"
                    ) from None
                if reply[0] != "progress":
                    break
                if on_page is not None:
                    on_page(reply[1], reply[2])
            answered = True
        finally:
            if not answered:  # timeout, crash, or the task's own soft time limit interrupting the wait
                self.close()
        if reply[0] == "ok":
            return Converted(markdown=reply[1], pages=reply[2]["pages"], images=reply[2]["images"])
        _, error_class, message = reply
        raise _ERRORS.get(error_class, TransformationFailed)(message)

    def close(self) -> None:
        """Stop the converter (killing it if it is busy)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait for the process
                logger.error("converter process %s did not die", self.process.pid)

    def _exit_description(self) -> str:
        if self.process is None:
            return "not started"
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exit code {code}"


_local = threading.local()


def converter_process() -> ConverterProcess:
    """This thread's converter process (started lazily by the first conversion)."""
    converter = getattr(_local, "converter", None)
    if converter is None:
        converter = _local.converter = ConverterProcess(
            max_memory_mb=settings.DOCUMENT_TRANSFORM_MAX_MEMORY_MB,
            max_conversions=settings.DOCUMENT_TRANSFORM_MAX_CONVERSIONS,
        )
    return converter


def run_conversion(
    *,
    transformer: Transformer,
    data: bytes,
    charset: str | None,
    filename: str,
    options: dict[str, Any] | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> Converted:
    """Convert ``data`` with ``transformer`` in the converter process, within DOCUMENT_TRANSFORM_TIMEOUT and
    DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES."""
    return converter_process().run(
        function_path=transformer.function_path,
        data=data,
        hints={"charset": charset, "filename": filename},
        timeout=settings.DOCUMENT_TRANSFORM_TIMEOUT,
        max_output_bytes=settings.DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES,
        options=options,
        on_page=on_page,
    )
