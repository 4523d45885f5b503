from jobs.backoff import job_retry_delay


def test_a_retry_after_is_the_delay_plus_small_jitter_not_the_backoff():
    delays = [job_retry_delay(2, base=60, cap=600, retry_after=1) for _ in range(200)]
    assert all(1.0 <= delay <= 1.1 for delay in delays)
    assert len(set(delays)) > 1  # jittered: the calls refused together do not come back together
    assert all(30 <= job_retry_delay(0, base=1, cap=600, retry_after=30) <= 33 for _ in range(50))


def test_a_retry_after_is_bounded_by_the_cap_and_without_one_the_backoff_applies():
    assert job_retry_delay(0, base=1, cap=10, retry_after=3600) <= 11
    assert all(60 <= job_retry_delay(1, base=60, cap=600) <= 120 for _ in range(50))
