"""The converter process: runs conversion functions on behalf of one worker process.

Started by ``doctransform.converter`` as ``python -m doctransform.converter_server FD MAX_MEMORY_MB``; it talks
over the socket FD (``multiprocessing.connection`` framing). Requests are
``("convert", function_path, data, hints, max_output_bytes, options)``; answers are ``("ok", markdown, details)``
(``details``: what happened to each page, and page images for a vision model) or
``("failed", error_class_name, message)``, after any number of ``("progress", pages_done, page_count)``.
A hang, a crash or a memory blow-up stays in this process: the worker kills it and starts another. An output over
``max_output_bytes`` (0: no cap) is refused here, so it is never sent to the worker nor stored; while it is built,
this process's memory cap bounds it. No Django here, and no secrets: the worker starts it with a minimal
environment.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from multiprocessing.connection import Connection
from typing import Any

from doctransform.exceptions import TransformationFailed, markdown_too_large
from doctransform.transformers import Converted, conversion_options, load_function, output_limit, page_reporter

MIB = 1024 * 1024


def serve(conn: Connection, *, max_memory_mb: int) -> None:
    # One conversion at a time needs no BLAS thread pool (numpy comes in with pandas): fewer threads, less memory.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import markitdown.converters  # noqa: F401  - pay the ~1 s import once, before the first request
    import pypdfium2  # noqa: F401  - and those of OCR (its language models load on first use)
    import tesserocr  # noqa: F401

    if max_memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory_mb * MIB, max_memory_mb * MIB))
    conn.send(("ready", os.getpid()))
    functions: dict[str, Any] = {}
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the worker closed the socket or died
            return
        _, function_path, data, hints, max_output_bytes, options = request
        output_limit.set(max_output_bytes)
        conversion_options.set(options)
        markdown: str | None = None
        converted: Any = None
        page_reporter.set(lambda done, total: conn.send(("progress", done, total)))
        try:
            function = functions.get(function_path) or functions.setdefault(function_path, load_function(function_path))
            converted = function(data, **hints)
            if not isinstance(converted, Converted):
                converted = Converted(markdown=converted)
            markdown = converted.markdown
            if max_output_bytes and utf8_size_exceeds(markdown, max_output_bytes):
                raise markdown_too_large(max_output_bytes)
            reply: tuple[Any, ...] = ("ok", markdown, {"pages": converted.pages, "images": converted.images})
        except TransformationFailed as exc:
            reply = ("failed", type(exc).__name__, str(exc))
        except MemoryError:
            reply = ("failed", "DocumentUnreadable", f"the conversion needed more than {max_memory_mb} MiB of memory")
        except Exception as exc:  # a bug in a converter: report it, keep serving
            logging.getLogger(__name__).exception("conversion failed")
            reply = ("failed", "TransformationFailed", f"the converter failed: {type(exc).__name__}: {exc}")
        del request, data
        markdown = converted = None  # an output refused for its size is not kept while the converter waits
        conn.send(reply)


def utf8_size_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 (1 to 4 bytes a character; encoded only when
    its length cannot tell)."""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="converter %(levelname)s %(message)s")
    conn = Connection(int(argv[1]))
    serve(conn, max_memory_mb=int(argv[2]) if len(argv) > 2 else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
