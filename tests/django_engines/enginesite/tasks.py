"""The task code that must not change when the engine does: one sync task, one async task.

Each writes a ``TaskRun`` row (the async one through Django's async ORM) and returns a
JSON value, so the test sees both the side effect and the result.
"""

from __future__ import annotations

import os
import sys
import time

from .models import TaskRun

# Django 6's django.tasks on Python >= 3.12 here, the django-tasks backport below it (see
# settings.IN_PROCESS_BACKEND): the one import a project makes differently on Django 5.2.
if sys.version_info >= (3, 12):
    from django.tasks import task
else:
    from django_tasks import task


@task()
def record_sync(token: str, n: int) -> dict[str, object]:
    TaskRun.objects.create(token=token, kind="sync", pid=os.getpid(), ppid=os.getppid())
    return {"kind": "sync", "doubled": n * 2}


@task()
async def record_async(token: str, n: int) -> dict[str, object]:
    await TaskRun.objects.acreate(token=token, kind="async", pid=os.getpid(), ppid=os.getppid())
    return {"kind": "async", "incremented": n + 1}


@task()
def record_numbered(token: str, n: int) -> int:
    """One of many: holds its slot a moment (so that a short drain cannot run them all),
    then writes its row, ``kind`` ``n<N>``."""
    time.sleep(0.1)
    TaskRun.objects.create(token=token, kind=f"n{n}", pid=os.getpid(), ppid=os.getppid())
    return n
