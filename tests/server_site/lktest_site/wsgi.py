"""WSGI entry point.  With ``LK_SUBMIT_AT_IMPORT=1`` it submits a job at import time, as an
app that uses loopkeeper while it loads does (under gunicorn ``--preload``: in the master,
before the fork)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lktest_site.settings")
application = get_wsgi_application()

if os.environ.get("LK_SUBMIT_AT_IMPORT") == "1":
    from lktest_jobs.jobs import warm_up

    warm_up()
