"""``engine_demo``: enqueue the two tasks, or read their results back, and print JSON.

The same code for every engine, as a view or a script of a real project would be:

- ``engine_demo enqueue TOKEN [--wait S]`` enqueues ``record_sync(TOKEN, 21)`` and
  ``record_async(TOKEN, 41)`` on ``settings.QUEUE``; with ``--wait``, it waits (at most S
  seconds) for both to finish before printing.
- ``engine_demo many TOKEN COUNT`` enqueues ``record_numbered(TOKEN, n)`` for n in
  ``range(COUNT)`` on ``settings.QUEUE`` and returns at once (the process then exits,
  and its exit drain does what it can).
- ``engine_demo durable ID...`` (the ``handoff`` engine) fetches results of
  ``record_numbered`` by id from the backend ``durable``.
- ``engine_demo results SYNC_ID ASYNC_ID [--wait S]`` fetches both results by id, as any
  process of the project may, waiting for them to finish; if the backend has no such result
  (an in-process backend's live in the process that enqueued them), both are ``MISSING``.

Output: ``{"backend": ..., "pid": ..., "results": [{"id", "status", "return_value", ...}]}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...tasks import record_async, record_numbered, record_sync

if sys.version_info >= (3, 12):  # as in tasks.py: Django 6 here, Django 5.2 below
    from django.tasks import TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist
else:
    from django_tasks import TaskResultStatus
    from django_tasks.exceptions import TaskResultDoesNotExist

STATUSES = ("READY", "RUNNING", "SUCCESSFUL", "FAILED")
FINAL = frozenset({"SUCCESSFUL", "FAILED"})


def status_name(result: Any) -> str:
    """The result's status as the project's own ``TaskResultStatus`` sees it.

    A backend may return its own classes (django-tasks-rq returns the backport's
    ``TaskResult`` even on Django 6): caller code compares with the framework's members.
    """
    (name,) = [name for name in STATUSES if result.status == getattr(TaskResultStatus, name)]
    return name


def describe(result: Any) -> dict[str, Any]:
    """The parts of a TaskResult the test checks, as JSON."""
    status = status_name(result)
    return {
        "id": str(result.id),
        "task": result.task.module_path,
        "status": status,
        "return_value": result.return_value if status == "SUCCESSFUL" else None,
        "errors": [error.exception_class_path for error in result.errors],
        "worker_ids": list(result.worker_ids),
    }


class Command(BaseCommand):
    help = "Enqueue the engines test's tasks, or read their results back, as JSON."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["enqueue", "many", "durable", "results"])
        parser.add_argument(
            "values",
            nargs="+",
            help="enqueue: TOKEN; many: TOKEN COUNT; durable: ID...; results: SYNC_ID ASYNC_ID",
        )
        parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for both")

    def handle(self, *args: Any, **options: Any) -> None:
        action: str = options["action"]
        values: list[str] = options["values"]
        wait: float = options["wait"]
        backend = record_sync.get_backend()
        if action == "many":
            token, count = values
            ids = [
                record_numbered.using(queue_name=settings.QUEUE).enqueue(token, n).id
                for n in range(int(count))
            ]
            self.stdout.write(json.dumps({"pid": os.getpid(), "ids": ids}))
            return
        if action == "durable":
            durable = record_numbered.using(backend="durable")
            found = [describe(durable.get_result(value)) for value in values]
            self.stdout.write(json.dumps({"pid": os.getpid(), "results": found}))
            return
        if action == "enqueue":
            if len(values) != 1:
                raise CommandError(f"enqueue takes one TOKEN, got {values!r}")
            token = values[0]
            results = [
                record_sync.using(queue_name=settings.QUEUE).enqueue(token, 21),
                record_async.using(queue_name=settings.QUEUE).enqueue(token, 41),
            ]
        else:
            if len(values) != 2:
                raise CommandError(f"results takes SYNC_ID ASYNC_ID, got {values!r}")
            try:
                results = [record_sync.get_result(values[0]), record_async.get_result(values[1])]
            except TaskResultDoesNotExist:  # an in-process backend's results stay in its process
                missing = [{"id": value, "status": "MISSING"} for value in values]
                self.stdout.write(json.dumps({"pid": os.getpid(), "results": missing}))
                return
        if wait:
            results = self._wait_for(results, wait, fetch=backend.supports_get_result)
        payload = {
            "backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
            "pid": os.getpid(),
            "results": [describe(result) for result in results],
        }
        self.stdout.write(json.dumps(payload))

    def _wait_for(self, results: list[Any], wait: float, *, fetch: bool) -> list[Any]:
        """Poll the backend's store until every result is final, or fail after ``wait`` s."""
        deadline = time.monotonic() + wait
        while any(status_name(result) not in FINAL for result in results):
            if not fetch:
                raise CommandError("results are not final and the backend cannot fetch them")
            if time.monotonic() > deadline:
                states = [status_name(result) for result in results]
                raise CommandError(f"results not final after {wait}s: {states}")
            time.sleep(0.05)  # a poll: the deadline above bounds it
            for result in results:
                result.refresh()
        return results
