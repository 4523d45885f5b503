"""A process that admits a project's waiting jobs and stops after publishing ``AFTER`` of them, before its admission
transaction commits, so that a test can SIGKILL it mid-batch.

    python -m tests.chaos.admitting_process PROJECT_ID AFTER

prints "published" once the ``AFTER``-th message is confirmed by the broker, then waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    project_id, after = int(sys.argv[1]), int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaapi.settings")
    import django

    django.setup()
    import tests.job_functions  # noqa: F401  (registers the test job functions, as a test worker's -I does)
    from jobs import admission, publishing

    publish = publishing.publish_job
    published = []

    def publish_then_wait(job):
        confirmed = publish(job)
        published.append(job.id)
        if len(published) == after:
            print("published", flush=True)
            time.sleep(3600)
        return confirmed

    publishing.publish_job = publish_then_wait
    admission.admit(project_id=project_id, queue="high_priority")
    print("admitted without being killed", flush=True)


if __name__ == "__main__":
    main()
