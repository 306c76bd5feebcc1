#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import atexit
import gc
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "powerautomation.settings")
    # The interpreter's last garbage collections walk every object Django loaded: about
    # 0.3 s on exit, and `trigger_local --wait` is the deploy script's last line. Freezing
    # them skips that walk; the operating system frees the memory anyway.
    atexit.register(gc.freeze)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
