class RetryableJobError(Exception):
    """Raised by a job function for a transient failure: the job is retried with backoff.

    ``retry_after`` (seconds), e.g. from an HTTP Retry-After header, replaces the backoff: the job is retried
    that long after (plus a little jitter). ``status`` is the HTTP status that caused it, when there was one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class JobDeferred(Exception):
    """Raised by a job function before it does anything when its turn has not come (a limit shared by every
    worker is reached, e.g. a provider credential's requests per minute): the job waits PENDING and its message
    is published again ``delay`` seconds later. Waiting is not failing: it does not count against the retries."""

    def __init__(self, reason: str, *, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


class JobStateError(Exception):
    """The job is not in a state that allows the operation (e.g. cancelling a finished job)."""
