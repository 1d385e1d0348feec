from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse

from .jobs import queue as queue_jobs


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def queue(request: HttpRequest) -> HttpResponse:
    """Queue a sync and an async job for ``key``; answer at once."""
    key = request.GET["key"]
    queue_jobs(key, float(request.GET.get("after", "0.3")))
    return HttpResponse(f"queued {key} pid={os.getpid()}")
