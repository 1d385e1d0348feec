"""The status view: a JSON health check of the default runner.

Opt in with a URL pattern (the README's Django section)::

    from django.urls import path
    from loopkeeper.contrib.django.views import status

    urlpatterns = [..., path("loopkeeper/status/", status, name="loopkeeper-status")]

It is a health check, not an admin page: every request gets the counters of
``runner.stats()`` and the number of tracked threads; task and thread names (chosen by
the application, they may carry ids) only go to staff users (``request.user.is_staff``),
or to everyone when ``LOOPKEEPER["STATUS_SHOW_NAMES"]`` is True.  It never starts the
runner: reading the counters of a runner whose loop thread has not started yet starts
nothing (and then answers zeros).
"""

from __future__ import annotations

import dataclasses

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

import loopkeeper

from ._settings import read_settings

__all__ = ("status",)


@never_cache
@require_safe
def status(request: HttpRequest) -> JsonResponse:
    """``GET``: the default runner's counters as JSON; names only for staff.

    Answer (``threads_detail`` only for staff, or with ``STATUS_SHOW_NAMES``)::

        {"runner": "loopkeeper",
         "stats": {"submitted": 12, "pending": 0, "running": 1, "succeeded": 11,
                   "failed": 0, "cancelled": 0, "abandoned": 0, "rejected": 0,
                   "threads": 1, "loop_lag": 0.0003},
         "threads_detail": [{"name": "loopkeeper-worker-1", "task_id": 12,
                             "task_name": "welcome-mail", "age": 0.41,
                             "state": "running"}]}
    """
    runner = loopkeeper.get_runner()  # creates the runner object if needed; starts nothing
    body: dict[str, object] = {
        "runner": runner.name,
        "stats": dataclasses.asdict(runner.stats()),
    }
    user = getattr(request, "user", None)  # django.contrib.auth may not be installed
    if getattr(user, "is_staff", False) or read_settings().status_show_names:
        body["threads_detail"] = [dataclasses.asdict(info) for info in runner.threads()]
    return JsonResponse(body)
