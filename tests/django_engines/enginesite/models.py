"""The row each task writes: which task ran, for which test run, in which process."""

from __future__ import annotations

from django.db import models


# Annotated by hand: mypy runs without the django-stubs plugin.
class TaskRun(models.Model):
    token: models.CharField[str, str] = models.CharField(max_length=64)  # the test run's
    kind: models.CharField[str, str] = models.CharField(max_length=8)  # "sync" or "async"
    pid: models.IntegerField[int, int] = models.IntegerField()  # the process that ran the task
    # Its parent: RQ runs each job in a child process it forks from the worker.
    ppid: models.IntegerField[int, int] = models.IntegerField()
