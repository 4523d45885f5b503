class RetryableJobError(Exception):
    """Raised by a job function for a transient failure: the job is retried with backoff.

    ``retry_after`` (seconds) is honoured as the minimum delay, e.g. from an HTTP Retry-After header.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobStateError(Exception):
    """The job is not in a state that allows the operation (e.g. cancelling a finished job)."""
