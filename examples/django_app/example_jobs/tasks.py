"""A task for Django's Tasks framework: ``send_digest.enqueue(job_id)`` runs it on
loopkeeper's runner through ``LoopkeeperBackend`` (``TASKS`` in the settings).  The same
code moves to a multi-process backend (django-tasks-db, RQ) by changing ``BACKEND``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .jobs import WORK_SECONDS, finish

if TYPE_CHECKING:
    from django.tasks import task
else:
    try:
        from django.tasks import task  # Django >= 6.0
    except ImportError:  # Django 5.2: the django-tasks backport
        from django_tasks import task


@task
def send_digest(job_id: int) -> None:
    time.sleep(WORK_SECONDS)  # stands for rendering and sending a mail
    finish(job_id)
