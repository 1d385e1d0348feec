"""ASGI entry point: Django's handler inside loopkeeper's lifespan middleware."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from loopkeeper.contrib.asgi import LifespanMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lktest_site.settings")
application = LifespanMiddleware(get_asgi_application())
