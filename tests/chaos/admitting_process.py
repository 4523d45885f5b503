"""A process that admits a project's waiting jobs and stops once the broker has confirmed their messages, before its
admission transaction records them, so that a test can SIGKILL it there.

    python -m tests.chaos.admitting_process PROJECT_ID

prints "published N" (the confirmed messages) at that point, then waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    project_id = int(sys.argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaapi.settings")
    import django

    django.setup()
    import tests.job_functions  # noqa: F401  (registers the test job functions, as a test worker's -I does)
    from jobs import admission, publishing

    def wait_instead_of_recording(published, **kwargs):
        print(f"published {len(published)}", flush=True)
        time.sleep(3600)

    publishing._record_dispatch = wait_instead_of_recording
    admission.admit(project_id=project_id, queue="high_priority")
    print("admitted without being killed", flush=True)


if __name__ == "__main__":
    main()
