"""The converter process: runs conversion functions on behalf of one worker process.

Started by ``doctransform.converter`` as ``python -m doctransform.converter_server FD MAX_MEMORY_MB``; it talks
over the socket FD (``multiprocessing.connection`` framing). Requests are
``("convert", function_path, data, hints)``; answers are ``("ok", markdown)`` or
``("failed", error_class_name, message)``. A hang, a crash or a memory blow-up stays in this process: the
worker kills it and starts another. No Django here.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from multiprocessing.connection import Connection

from doctransform.exceptions import TransformationFailed
from doctransform.transformers import load_function

MIB = 1024 * 1024


def serve(conn: Connection, *, max_memory_mb: int) -> None:
    # One conversion at a time needs no BLAS thread pool (numpy comes in with pandas): fewer threads, less memory.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import markitdown.converters  # noqa: F401  - pay the ~1 s import once, before the first request

    if max_memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory_mb * MIB, max_memory_mb * MIB))
    conn.send(("ready", os.getpid()))
    functions = {}
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the worker closed the socket or died
            return
        _, function_path, data, hints = request
        try:
            function = functions.get(function_path) or functions.setdefault(function_path, load_function(function_path))
            reply = ("ok", function(data, **hints))
        except TransformationFailed as exc:
            reply = ("failed", type(exc).__name__, str(exc))
        except MemoryError:
            reply = ("failed", "DocumentUnreadable", f"the conversion needed more than {max_memory_mb} MiB of memory")
        except Exception as exc:  # a bug in a converter: report it, keep serving
            logging.getLogger(__name__).exception("conversion failed")
            reply = ("failed", "TransformationFailed", f"the converter failed: {type(exc).__name__}: {exc}")
        del request, data
        conn.send(reply)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="converter %(levelname)s %(message)s")
    conn = Connection(int(argv[1]))
    serve(conn, max_memory_mb=int(argv[2]) if len(argv) > 2 else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
