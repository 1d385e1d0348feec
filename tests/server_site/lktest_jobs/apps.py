from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The test site's jobs; loopkeeper's own app (installed beside it) connects the
    server hooks."""

    name = "lktest_jobs"
