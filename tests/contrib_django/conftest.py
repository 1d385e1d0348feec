"""The pytest session's in-process Django: settings and ``django.setup()``, done once here.

Only this file configures Django in the test process (other Django tests start their own
interpreters with their own settings).  It runs when pytest collects this package,
before any test, so ``ready()`` applies ``LOOPKEEPER`` to the default runner before
anything could start it.  (The package is not called ``django``: that would shadow
Django itself.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

import loopkeeper

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "loopkeeper.contrib.django",
]
if django.VERSION < (6, 0):  # the Tasks framework comes from the django-tasks backport
    INSTALLED_APPS.append("django_tasks")

SESSION_LOOPKEEPER = {"MAX_CONCURRENCY": 2, "SHUTDOWN_TIMEOUT": 10}

BACKEND = "loopkeeper.contrib.django.backends.LoopkeeperBackend"
SRC = Path(__file__).resolve().parents[2] / "src"

if not settings.configured:
    settings.configure(
        SECRET_KEY="loopkeeper-tests",
        USE_TZ=True,
        INSTALLED_APPS=INSTALLED_APPS,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        ROOT_URLCONF="contrib_django.urls",
        LOGGING_CONFIG=None,  # leave the test process's logging alone
        LOOPKEEPER=SESSION_LOOPKEEPER,
        TASKS={"default": {"BACKEND": BACKEND, "QUEUES": ["default", "emails"]}},
    )
    django.setup()

# After setup: the task module's @task decorators look the backend up.
from loopkeeper.contrib.django._tasks_compat import (  # noqa: E402
    TaskResult,
    task_finished,
)
from loopkeeper.contrib.django.backends import LoopkeeperBackend  # noqa: E402

WaitFinished = Callable[..., "TaskResult[Any, Any]"]


@pytest.fixture
def finished() -> Iterator[WaitFinished]:
    """``finished(result)`` waits (with a deadline) for the ``task_finished`` signal of
    ``result`` and returns a fresh ``get_result()`` of it."""
    lock = threading.Lock()
    events: dict[str, threading.Event] = {}

    def event(result_id: str) -> threading.Event:
        with lock:
            return events.setdefault(result_id, threading.Event())

    def receiver(sender: object, task_result: TaskResult[Any, Any], **kwargs: object) -> None:
        event(task_result.id).set()

    task_finished.connect(receiver, weak=False, dispatch_uid="lk-tests-finished")

    def wait(result: TaskResult[Any, Any], timeout: float = 10.0) -> TaskResult[Any, Any]:
        assert event(result.id).wait(timeout), f"task {result.task.name} never finished"
        backend = result.task.get_backend()
        assert isinstance(backend, LoopkeeperBackend)
        return backend.get_result(result.id)

    yield wait
    task_finished.disconnect(dispatch_uid="lk-tests-finished")


@pytest.fixture(autouse=True)
def _no_tasks_left(wait_until: Callable[..., None]) -> Iterator[None]:
    """Each test ends with nothing pending or running on the default runner."""
    yield

    def idle() -> bool:
        stats = loopkeeper.get_runner().stats()
        return stats.pending == 0 and stats.running == 0

    wait_until(idle, what="the default runner to finish the test's tasks")


def run_django_script(tmp_path: Path, source: str) -> tuple[Any, str]:
    """Run ``source`` in a fresh interpreter (a shutdown closes its default runner for
    good), in ``tmp_path``, with ``EXTRA_APPS`` in it replaced by the Tasks framework's
    app where Django needs one (the django-tasks backport on Django 5.2).  Returns the
    JSON its last line of output printed, and its stderr."""
    extra = '["django_tasks"]' if django.VERSION < (6, 0) else "[]"
    script = tmp_path / "script.py"
    script.write_text(source.replace("EXTRA_APPS", extra))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# The start of a script for run_django_script: Django on LoopkeeperBackend with one
# MAX_CONCURRENCY slot and MAX_PENDING (fill in: .format(max_pending=N)); a task ``hold``
# that takes the slot for good (``started`` is set once it has it) and a task ``waiting``.
ONE_SLOT_SCRIPT = """
import asyncio, json, threading, time
from datetime import timedelta
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["loopkeeper.contrib.django"] + EXTRA_APPS,
    USE_TZ=True,
    LOGGING_CONFIG=None,
    LOOPKEEPER={{"MAX_CONCURRENCY": 1, "MAX_PENDING": {max_pending}}},
    TASKS={{"default": {{"BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend"}}}},
)
django.setup()
import loopkeeper
from django.utils import timezone
from loopkeeper.contrib.django._tasks_compat import task

started = threading.Event()

@task
async def hold() -> None:
    started.set()
    await asyncio.Event().wait()

@task
def waiting() -> None:
    pass
"""
