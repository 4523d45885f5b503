"""The job-function registry: an allowlist of functions the generic tasks may run.

Apps register their functions at import time (from ``AppConfig.ready``). A worker receiving a message
that names a path not in the registry refuses it; nothing is ever imported from a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JobFunction = Callable[..., Any]
# What a job function's result says about an AI call, for the job's own columns (jobs.models.Job: provider, model,
# input_tokens, output_tokens, cost): written by the SUCCESS itself, so they count once per SUCCESS.
Accounting = Callable[[Any], dict[str, Any]]

# What the generic tasks pass every job function besides its params: no param may be named like one of them.
STANDARD_PARAMETERS = frozenset({"project_id", "job_id", "task_id", "task_instance"})


def reserved_param_names(params: dict[str, Any]) -> list[str]:
    """The keys of ``params`` that a job function receives already as standard parameters, sorted."""
    return sorted(STANDARD_PARAMETERS.intersection(params))


@dataclass(frozen=True)
class RegisteredFunction:
    path: str
    function: JobFunction
    job_type: str
    atomic: bool = False
    accounting: Accounting | None = None


_registry: dict[str, RegisteredFunction] = {}


def job_function(
    *, job_type: str, atomic: bool = False, accounting: Accounting | None = None
) -> Callable[[JobFunction], JobFunction]:
    """Register a job function under its dotted path (``module.function``).

    The function is called as ``fn(project_id=..., job_id=..., task_id=..., task_instance=..., **params)``.
    With ``atomic=True`` its database writes commit in the same transaction as the job's SUCCESS (exactly-once
    database effects); use it only for functions that do short database work, never for long I/O.
    """

    def decorator(fn: JobFunction) -> JobFunction:
        path = f"{fn.__module__}.{fn.__qualname__}"
        existing = _registry.get(path)
        if existing is not None and existing.function is not fn:
            raise ValueError(f"job function {path!r} is already registered")
        _registry[path] = RegisteredFunction(
            path=path, function=fn, job_type=job_type, atomic=atomic, accounting=accounting
        )
        return fn

    return decorator


def get_job_function(path: str) -> RegisteredFunction:
    """The registered function for ``path``; ``ValueError`` when it is not registered."""
    try:
        return _registry[path]
    except (KeyError, TypeError):
        raise ValueError(f"job function {path!r} is not registered") from None


def registered_paths() -> list[str]:
    return sorted(_registry)
