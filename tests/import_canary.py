"""Importing this module leaves a mark: proves that a worker imported it."""

import os
from pathlib import Path

Path(os.environ.get("KAAPI_IMPORT_CANARY", "/tmp/kaapi-import-canary")).write_text("imported")


def run(**kwargs):
    return "should never run"
