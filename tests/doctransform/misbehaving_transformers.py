"""Transformers that misbehave on purpose (registered for text/plain under test-only names).

The test process imports this module, and test workers load it with `-I`; their converter processes import
the functions by path, like any other transformer.
"""

from __future__ import annotations

import json
import os
import signal
import time

from doctransform.detection import TEXT
from doctransform.transformers import register_transformer


@register_transformer(name="test-hang", source_types=(TEXT,))
def hang(data: bytes, *, charset=None, filename: str = "") -> str:
    """Never returns."""
    time.sleep(3600)
    return ""


def hang_once_started(data: bytes, *, charset=None, filename: str = "") -> str:
    """Writes "started" to the file named by ``data`` (a test awaits it), then never returns. Not registered: the
    converter is handed its path directly."""
    with open(data.decode(), "w") as marker:
        marker.write("started")
    time.sleep(3600)
    return ""


@register_transformer(name="test-crash", source_types=(TEXT,))
def crash(data: bytes, *, charset=None, filename: str = "") -> str:
    """Dies the way a segfaulting parser does."""
    os.kill(os.getpid(), signal.SIGSEGV)
    return ""


@register_transformer(name="test-memory-hog", source_types=(TEXT,))
def memory_hog(data: bytes, *, charset=None, filename: str = "") -> str:
    """Asks for far more memory than the converter's cap."""
    blob = bytearray(64 * 1024**3)
    return str(len(blob))


@register_transformer(name="test-pid", source_types=(TEXT,))
def pid(data: bytes, *, charset=None, filename: str = "") -> str:
    """The converter process's pid, to tell whether it was replaced."""
    return str(os.getpid())


@register_transformer(name="test-environment", source_types=(TEXT,))
def environment(data: bytes, *, charset=None, filename: str = "") -> str:
    """The names of the converter process's environment variables, as JSON."""
    return json.dumps(sorted(os.environ))
