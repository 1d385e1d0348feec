"""Under an ASGI server (``uvicorn example_site.asgi:application``): the lifespan
middleware drains loopkeeper when the server stops."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from loopkeeper.contrib.asgi import LifespanMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
application = LifespanMiddleware(get_asgi_application())
