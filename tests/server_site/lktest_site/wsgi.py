"""WSGI entry point.  With ``LK_SUBMIT_AT_IMPORT=1`` it runs a loopkeeper job that uses
asgiref's thread at import time, as an app that uses loopkeeper while it loads does
(under gunicorn ``--preload`` or uWSGI without ``--lazy-apps``: in the master, before the
fork); with ``LK_SUBMIT_AT_IMPORT=loop``, a job that uses loopkeeper only."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lktest_site.settings")
application = get_wsgi_application()

if os.environ.get("LK_SUBMIT_AT_IMPORT"):
    from lktest_jobs.jobs import warm_up

    warm_up(asgiref=os.environ["LK_SUBMIT_AT_IMPORT"] == "1")
