#!/usr/bin/env python
import os
import sys


def _gevent_worker(argv: list[str]) -> bool:
    """True for `manage.py run_worker --pool gevent`: it must monkey-patch before Django imports anything."""
    if len(argv) < 2 or argv[1] != "run_worker":
        return False
    for i, arg in enumerate(argv):
        if arg == "--pool=gevent" or (arg == "--pool" and argv[i + 1 : i + 2] == ["gevent"]):
            return True
    return False


def main() -> None:
    if _gevent_worker(sys.argv):
        from gevent import monkey

        monkey.patch_all()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaapi.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
