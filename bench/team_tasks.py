"""The task of the drain's baselines (bench/drain_baselines.py, loaded with --include): a no-op as a Django team
writes one, its result stored by the configured backend (bench/team_settings.py), STARTED included."""

from celery import shared_task


@shared_task(name="bench.team_noop")
def team_noop(n: int) -> int:
    return n
