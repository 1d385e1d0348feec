from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "lktest_jobs"

    def ready(self) -> None:
        # loopkeeper's Django app does this in its own ready(); idempotent.
        from loopkeeper.contrib import runserver, uwsgi  # noqa: PLC0415

        runserver.connect()
        uwsgi.install()
