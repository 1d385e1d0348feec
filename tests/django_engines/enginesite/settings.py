"""Settings for the engines test project.  Only ``TASKS["default"]`` depends on the engine.

Environment (set by ``tests/django_engines/test_engines.py``):
``LK_ENGINE``: ``inprocess``, ``database`` or ``rq``; ``LK_ENGINES_DB``: the PostgreSQL
database (created and dropped by the test); ``LK_ENGINES_QUEUE``: the queue name, unique to
the test run so that workers of other runs on the same Redis never take its tasks.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

ENGINE = os.environ["LK_ENGINE"]
QUEUE = os.environ["LK_ENGINES_QUEUE"]

SECRET_KEY = "engines-test-only"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS: list[str] = []

# Each engine's app is installed once, whichever engine is in use (as a project that may
# switch would have it): django_tasks_db owns the queue table, django_rq the RQ connections.
INSTALLED_APPS = ["django_tasks_db", "django_rq", "enginesite"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "NAME": os.environ["LK_ENGINES_DB"],
        "USER": os.environ.get("PGUSER") or getpass.getuser(),
    }
}

# @task() puts a task on "default"; the test sends its runs to QUEUE (.using(queue_name=...)).
QUEUES = ["default", QUEUE]

_REDIS = {"HOST": "127.0.0.1", "PORT": 6379, "DB": int(os.environ.get("LK_ENGINES_REDIS_DB", "0"))}
RQ_QUEUES = dict.fromkeys(QUEUES, _REDIS)

# The dev environment has Django 6 (django.tasks) on Python >= 3.12 and Django 5.2 with the
# django-tasks backport below it (pyproject.toml's dev group), so the version picks the path.
if sys.version_info >= (3, 12):
    IN_PROCESS_BACKEND = "django.tasks.backends.immediate.ImmediateBackend"
else:
    IN_PROCESS_BACKEND = "django_tasks.backends.immediate.ImmediateBackend"

BACKENDS: dict[str, dict[str, Any]] = {
    # Stand-in for LoopkeeperBackend until that lands: runs each task inside enqueue().
    "inprocess": {"BACKEND": IN_PROCESS_BACKEND},
    "database": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "rq": {"BACKEND": "django_tasks_rq.RQBackend"},
}

TASKS = {"default": {**BACKENDS[ENGINE], "QUEUES": QUEUES}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
