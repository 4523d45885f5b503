"""The job-function registry: an allowlist of functions the generic tasks may run.

Apps register their functions at import time (from ``AppConfig.ready``). A worker receiving a message
that names a path not in the registry refuses it; nothing is ever imported from a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaapi.registry import dotted_path, register

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
    # The serializer documenting what the function returns (the job's ``result`` in the OpenAPI schema).
    result: type | None = None
    accounting: Accounting | None = None


_registry: dict[str, RegisteredFunction] = {}


def job_function(
    *, job_type: str, atomic: bool = False, result: type | None = None, accounting: Accounting | None = None
) -> Callable[[JobFunction], JobFunction]:
    """Register a job function under its dotted path (``module.function``).

    The function is called as ``fn(project_id=..., job_id=..., task_id=..., task_instance=..., **params)``.
    With ``atomic=True`` its database writes commit in the same transaction as the job's SUCCESS (exactly-once
    database effects); use it only for functions that do short database work, never for long I/O.
    ``result`` is a serializer class describing the returned value, for the API schema.
    """

    def decorator(fn: JobFunction) -> JobFunction:
        path = dotted_path(fn)
        entry = RegisteredFunction(
            path=path, function=fn, job_type=job_type, atomic=atomic, result=result, accounting=accounting
        )
        register(_registry, path, entry, what=f"job function {path!r}")
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


def result_serializers() -> dict[str, type]:
    """The result serializer of each job type that documents one, by job type."""
    return {entry.job_type: entry.result for _, entry in sorted(_registry.items()) if entry.result is not None}
